"""Logging set-up: every line one JSON object, trafficd's own events and every library's (journald keeps them).

Event names are stable and namespaced `component.past_tense_event` (see the README's event catalogue).
Records from stdlib loggers (apscheduler, asyncio, aiohttp, botocore, `warnings.warn`) go through structlog's
`ProcessorFormatter` into the same JSON shape, as `library.logged` with `logger` and `message`; the same library
message repeated within `REPEAT_WINDOW_S` is written once (the next one carries `repeated`). botocore/urllib3
are held at WARNING: their DEBUG output includes signed request headers.

Figures are rounded when written (`tidy`): `*_ms` to whole milliseconds, other floats to 4 significant digits;
epoch times (`*_at`, `*_until`, `since`) become ISO 8601 UTC strings, so no epoch sits beside an ISO timestamp.

structlog is imported when the first line is written, not with this module: an on-call command that logs nothing
(`trafficd policy check`) does not pay for it (`configure(lazy=True)`; the CLI start target is 0.3 s).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import sys
import time
from typing import Any, TextIO, cast

_NOISY = ("botocore", "boto3", "urllib3", "s3transfer", "aiohttp.access", "apscheduler", "asyncio")
REPEAT_WINDOW_S = 300.0
SIGNIFICANT_DIGITS = 4
_EPOCH_SUFFIXES = ("_at", "_until")
_EPOCH_KEYS = frozenset({"since", "evaluated_at"})
_MIN_EPOCH = 1e9  # 2001-09-09: smaller numbers in an `_at` field are not wall-clock times


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


def round_figure(value: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    """`value` to `digits` significant digits (330.14355828849347 → 330.1); NaN and inf unchanged."""
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def iso_time(epoch_s: float) -> str:
    """An epoch time as ISO 8601 UTC with milliseconds (`2026-12-02T03:12:00.250Z`)."""
    stamp = dt.datetime.fromtimestamp(epoch_s, tz=dt.UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _is_epoch_key(key: str) -> bool:
    return key in _EPOCH_KEYS or key.endswith(_EPOCH_SUFFIXES)


def _tidy_value(key: str, value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float | int) and _is_epoch_key(key) and value > _MIN_EPOCH:
        return iso_time(float(value))
    if isinstance(value, float):
        if key.endswith("_ms") and math.isfinite(value) and abs(value) >= 10:
            return round(value)
        return round_figure(value)
    if isinstance(value, dict):
        return {k: _tidy_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_tidy_value(key, v) for v in value]
    return value


def tidy(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: rounded figures and ISO times, recursively (see the module docstring)."""
    return {k: (v if k == "timestamp" else _tidy_value(k, v)) for k, v in event_dict.items()}


def _library_fields(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """A stdlib record's message becomes `message` under the stable event name `library.logged`."""
    record = event_dict.get("_record")
    if record is not None and "component" not in event_dict:
        event_dict["message"] = str(event_dict.get("event", ""))[:2000]
        event_dict["event"] = "library.logged"
        event_dict["component"] = record.name.split(".")[0]
        event_dict["logger"] = record.name
        if getattr(record, "repeated", 0):
            event_dict["repeated"] = record.repeated
    return event_dict


class RepeatFilter(logging.Filter):
    """Lets the same library message (logger + template) through once per `window_s`; counts the rest.

    apscheduler warns "skipped: maximum number of running instances" on every tick while an evaluation hangs on
    a Redis stall: one line per episode is enough, the next one says how many were left out.
    """

    def __init__(self, window_s: float = REPEAT_WINDOW_S) -> None:
        super().__init__()
        self.window_s = window_s
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = time.monotonic()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.window_s:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        record.repeated = 0 if last is None else last[1]
        self._seen[key] = (now, 0)
        return True


def _shared_processors() -> list[Any]:
    import structlog

    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _library_fields,
        tidy,
    ]


_pending: dict[str, Any] | None = None  # configure(lazy=True)'s settings until the first line is written


def configure(
    level: str = "INFO", json: bool | None = None, stream: Any = None, to_stderr: bool = False, *, lazy: bool = False
) -> None:
    """Configure structlog and stdlib logging once per process: JSON lines, trafficd's and libraries' alike.

    Daemons log to stdout (journald keeps it); on-call commands log to stderr so that their output (tables,
    JSON) is the only thing on stdout. `json=False` renders for a human (tests of the demo use it).
    `lazy=True` (on-call commands): the same configuration, done when the first line is logged (a trafficd
    logger used, or a library record at WARNING or above), so a command that logs nothing never imports structlog.
    """
    global _pending
    settings = {"level": level, "json": json, "stream": stream, "to_stderr": to_stderr}
    if not lazy:
        _pending = None
        _configure_now(**settings)
        return
    _pending = settings
    _stdlib_levels(_Deferred())


def _level_number(level: str) -> int:
    number = logging.getLevelName(level.upper())
    return number if isinstance(number, int) else logging.INFO


def _ensure_configured() -> None:
    """Run a pending lazy `configure` (the first line of a command is about to be written)."""
    global _pending
    if _pending is not None:
        settings, _pending = _pending, None
        _configure_now(**settings)


def settle() -> None:
    """End a lazy `configure` that logged nothing (the command is over): configured now if structlog is loaded
    anyway (as an eager `configure` would have left it), else the root handler removed (Python's last-resort
    handler prints what a library logs at exit). Nothing stays pending for whatever runs next in this process."""
    global _pending
    if _pending is None:
        return
    if "structlog" in sys.modules:
        _ensure_configured()
        return
    _pending = None
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _Deferred):
            root.removeHandler(handler)


class _Deferred(logging.Handler):
    """The root handler of a lazy configuration: its first record configures logging, then goes through it."""

    def emit(self, record: logging.LogRecord) -> None:
        _ensure_configured()
        for handler in logging.getLogger().handlers:
            if handler is not self and record.levelno >= handler.level:
                handler.handle(record)


def _stdlib_levels(handler: logging.Handler) -> None:
    """`handler` as the root's only handler; libraries at WARNING; `warnings.warn` through logging."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.captureWarnings(True)
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)


def _configure_now(level: str, json: bool | None, stream: Any, to_stderr: bool) -> None:
    import structlog

    out = stream or _Current("stderr" if to_stderr else "stdout")
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if json is False
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    structlog.configure(
        processors=[*_shared_processors(), structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, out)),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(RepeatFilter())
    _stdlib_levels(handler)


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "msg": logging.INFO}  # what a lazy WARNING drops


def _dropped(*_: Any, **__: Any) -> None:
    return None


class _Logger:
    """structlog's lazy proxy, made on first use: importing a module with a module-level logger imports no
    structlog, and the first line written runs a pending lazy `configure` (lines below its level are dropped
    without it)."""

    __slots__ = ("_bound", "_real")

    def __init__(self, bound: dict[str, Any]) -> None:
        self._bound = bound
        self._real: Any = None

    def __getattr__(self, name: str) -> Any:
        real = self._real
        if real is None:
            pending = _pending
            if pending is not None and _LEVELS.get(name, logging.CRITICAL) < _level_number(pending["level"]):
                return _dropped
            import structlog

            _ensure_configured()
            real = self._real = structlog.get_logger(**self._bound)
        return getattr(real, name)


def get_logger(component: str, **bound: Any) -> Any:
    """A lazy logger: it follows `configure()` even when created at import time (module-level loggers)."""
    return _Logger({"component": component, **bound})
