"""structlog set-up: JSON lines on stdout (journald keeps them), console rendering on a TTY.

Event names are stable and namespaced `component.past_tense_event` (see the README's event catalogue).
botocore/urllib3 loggers are held at WARNING: their DEBUG output includes signed request headers.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO, cast

import structlog

_NOISY = ("botocore", "boto3", "urllib3", "s3transfer", "aiohttp.access", "apscheduler", "asyncio")


class _Current:
    """Writes to whatever `sys.<name>` is at the time of writing (pytest swaps it; a stale one may be closed)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def write(self, text: str) -> int:
        return int(getattr(sys, self.name).write(text))

    def flush(self) -> None:
        getattr(sys, self.name).flush()

    def isatty(self) -> bool:
        return bool(getattr(sys, self.name).isatty())


def configure(level: str = "INFO", json: bool | None = None, stream: Any = None, to_stderr: bool = False) -> None:
    """Configure structlog and stdlib logging once per process.

    Daemons log to stdout (journald keeps it); on-call commands log to stderr so that their output (tables,
    JSON) stays clean on stdout.
    """
    out = stream or _Current("stderr" if to_stderr else "stdout")
    render_json = json if json is not None else not out.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if render_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, out)),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)


def get_logger(component: str, **bound: Any) -> Any:
    """A lazy logger: it follows `configure()` even when created at import time (module-level loggers)."""
    return structlog.get_logger(component=component, **bound)
