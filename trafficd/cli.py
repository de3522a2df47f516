"""`trafficd` command line: one entry point, sub-commands registered by the module that owns them.

Each module listed in COMMAND_MODULES has `register(subparsers)`, which adds its sub-commands with
`set_defaults(func=handler)`; a handler takes the parsed arguments and returns the exit code.
Exit codes: 0 ok, 1 failure, 2 usage, 78 (EX_CONFIG) bad policy.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that add sub-commands (keep sorted; each owns its commands, its handlers and their tests).
COMMAND_MODULES = (
    "trafficd.commands.dns",
    "trafficd.commands.history",
    "trafficd.commands.policy",
    "trafficd.commands.probe",
    "trafficd.commands.redis",
    "trafficd.commands.simulate",
    "trafficd.commands.stats",
    "trafficd.commands.status",
    "trafficd.control.overrides",
    "trafficd.dev.bench.dns",
    "trafficd.dev.bench.probe",
    "trafficd.dev.demo",
    "trafficd.runtime.daemons",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trafficd",
        description="Drain slow LLM inference regions in Route 53 and restore them when they recover.",
    )
    parser.add_argument(
        "--log-level",
        default=None,
        help="DEBUG, INFO, WARNING or ERROR (default: INFO for the daemons; WARNING for commands, whose answer is "
        "the only thing on stdout)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from trafficd.runtime import logs

    daemon = getattr(args, "logs_to_stdout", False)
    logs.configure(args.log_level or ("INFO" if daemon else "WARNING"), to_stderr=not daemon)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
