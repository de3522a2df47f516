"""`trafficd` command line: one entry point, sub-commands registered by the module that owns them.

Each module named in COMMANDS has `register(subparsers)`, which adds its sub-commands with
`set_defaults(func=handler)`; a handler takes the parsed arguments and returns the exit code, or raises.
Only the module of the command being run is imported (`--help` imports none), so every command starts fast.

Errors are mapped to exit codes and messages here, once (trafficd/errors.py): 0 ok, 1 failure or refused,
2 usage, 75 (EX_TEMPFAIL) a dependency unreachable, 78 (EX_CONFIG) a configuration that cannot work.
Expected errors print one message, never a traceback; a closed pipe (`trafficd ... | head`) exits quietly.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from trafficd import __version__, errors
from trafficd.errors import UsageError

DEFAULT_POLICY = "/etc/trafficd/policy.yaml"
# A command collects cyclic garbage only past this many new objects (Python's default: 700). Starting `status`
# allocates ~70,000 (imports, the policy's validator) that live until exit: with the default the collector ran
# ~100 times, ~20 ms of a 0.3 s target, freeing next to nothing. Daemons get the default back once parsed.
COMMAND_GC_THRESHOLD = 100_000


class Command(NamedTuple):
    module: str  # imported only when this command runs; its register() adds the command
    help: str  # shown by `trafficd --help` without importing the module (a test keeps both texts equal)


# Production commands (keep sorted). A module may register several; development tools live in trafficd-dev.
COMMANDS: dict[str, Command] = {
    "agent": Command("trafficd.runtime.daemons", "probe one region's workers and record samples in Redis"),
    "check": Command(
        "trafficd.commands.check", "preflight: policy, secrets, Redis (version, ACL, clock), AWS, zone, workers"
    ),
    "controller": Command("trafficd.runtime.daemons", "judge regions and shift Route 53 weights"),
    "dns": Command("trafficd.commands.dns", "show the Route 53 records, plan what reconcile would change, bootstrap"),
    "history": Command(
        "trafficd.commands.history", "decisions, guards, overrides and Route 53 changes, with their reasons"
    ),
    "drain": Command("trafficd.commands.overrides", "drain a region (ramped) until the override expires"),
    "files": Command(
        "trafficd.commands.files", "list, print or install the example policies, systemd units and IAM policy"
    ),
    "freeze": Command(
        "trafficd.commands.overrides", "global kill switch: no serving fraction moves until unfreeze or expiry"
    ),
    "policy": Command("trafficd.commands.policy", "check, show, diff policy files; print the JSON Schema"),
    "probe": Command("trafficd.commands.probe", "probe a worker by hand and print each probe's timings"),
    "redis": Command("trafficd.commands.redis", "Redis set-up for a policy (ACL users)"),
    "simulate": Command(
        "trafficd.commands.simulate", "replay a timeline of window stats through the judge, guards and planner"
    ),
    "stats": Command(
        "trafficd.commands.stats", "window statistics per region, worker and model, as the controller sees them"
    ),
    "status": Command(
        "trafficd.commands.status",
        "leader, region states and why, weights, overrides (exit 3: no leader, 4: a region unknown)",
    ),
    "undrain": Command(
        "trafficd.commands.overrides", "cancel a drain; with --for, keep the region serving whatever the probes say"
    ),
    "unfreeze": Command("trafficd.commands.overrides", "lift the freeze"),
}

# Commands of `trafficd-dev` (source checkouts with the dev extra): named here only to point there.
DEV_COMMAND_NAMES = ("bench", "bench-cli", "bench-decisions", "bench-dns", "bench-probe", "demo", "fake-worker")


# ------------------------------------------------------------------ shared by every command


def default_policy() -> str:
    """$TRAFFICD_POLICY, else /etc/trafficd/policy.yaml: the one default of every command's --policy."""
    return os.environ.get("TRAFFICD_POLICY") or DEFAULT_POLICY


def add_policy_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--policy",
        default=default_policy(),
        metavar="FILE",
        help="policy file (YAML); default $TRAFFICD_POLICY, else " + DEFAULT_POLICY,
    )


def duration_arg(value: str) -> float:
    """An argparse `type` for durations written as in policies (`30s`, `2h`); parsed when given, not at --help."""
    from trafficd.policy.values import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def open_policy(args: argparse.Namespace) -> Any:
    """The policy named by `args.policy`, and `args.region` (when given) checked against it.

    The opening of every command: raises PolicyError (exit 78, every problem printed by `main`) or UsageError.
    Returns a `trafficd.policy.schema.Policy`.
    """
    from trafficd.policy.schema import load_policy

    policy = load_policy(args.policy).policy
    region = getattr(args, "region", None)
    if region is not None and region not in policy.regions:
        raise UsageError(f"unknown region {region!r} (regions: {', '.join(policy.region_names)})")
    return policy


# ------------------------------------------------------------------ parsing


def _command_name(argv: Sequence[str]) -> str | None:
    """The sub-command in argv (the first word that is not a global option or its value)."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--log-level":
            skip = True
        elif not word.startswith("-"):
            return word
    return None


def build_parser(
    argv: Sequence[str] | None = None,
    commands: Mapping[str, Command] = COMMANDS,
    *,
    prog: str = "trafficd",
    description: str = "Drain slow LLM inference regions in Route 53 and restore them when they recover.",
) -> argparse.ArgumentParser:
    """The parser for `argv`: the command's own module registered, the other commands as one-line stubs.

    With argv None every module is registered (tests, documentation).
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"trafficd {__version__}")
    parser.add_argument(
        "--log-level",
        default=None,
        help="DEBUG, INFO, WARNING or ERROR (default: INFO for the daemons; WARNING for commands, whose answer is "
        "the only thing on stdout)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    name = None if argv is None else _command_name(argv)
    if argv is None or (name is not None and name not in commands):
        wanted = {c.module for c in commands.values()}  # unknown command: load all, argparse lists the choices
    else:
        wanted = {commands[name].module} if name is not None else set()
    registered: set[str] = set()
    for module in sorted(wanted):
        importlib.import_module(module).register(sub)
        registered |= set(sub.choices)
    for cmd, spec in commands.items():
        if cmd not in registered:
            sub.add_parser(cmd, help=spec.help, add_help=False)
    return parser


# ------------------------------------------------------------------ running


def run(argv: Sequence[str] | None, parse: Any, gc_threshold: tuple[int, ...] | None = None) -> int:
    """Parse with `parse(argv)`, configure logging, run the handler: `dispatch`. A daemon runs with the garbage
    collector's `gc_threshold` (what it was before `main` raised it for a command)."""
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse(words).parse_args(words)
    except Exception as exc:  # e.g. a development command without its extra dependencies
        return _mapped(exc, None)
    from trafficd.runtime import logs

    daemon = getattr(args, "logs_to_stdout", False)
    if daemon and gc_threshold is not None:
        gc.set_threshold(*gc_threshold)
    # commands: structlog is imported only if a line is written (start-up time); daemons configure it at once
    logs.configure(args.log_level or ("INFO" if daemon else "WARNING"), to_stderr=not daemon, lazy=not daemon)
    try:
        return dispatch(args)
    finally:
        logs.settle()


def dispatch(args: argparse.Namespace) -> int:
    """Run the parsed command's handler; map what it raises to an exit code and one message (no traceback)."""
    try:
        code: int = args.func(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _closed_pipe()
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        return _mapped(exc, args)


def _mapped(exc: Exception, args: argparse.Namespace | None) -> int:
    code = errors.classify(exc)
    if code is None:
        raise exc  # a bug: the traceback is what a maintainer needs
    _report(exc, code, args)
    return code


def _report(exc: BaseException, code: int, args: argparse.Namespace | None) -> None:
    command = getattr(args, "command", None) or "trafficd"
    problems = getattr(exc, "problems", None)
    if problems:  # a policy: every problem on its own line, then the count
        for problem in problems:
            print(str(problem), file=sys.stderr)
        n = len(problems)
        first = getattr(problems[0], "file", "policy")
        print(f"{first}: {n} problem{'s' if n != 1 else ''} (exit {code})", file=sys.stderr)
    elif isinstance(exc, errors.TrafficdError):  # written for the operator (often `FILE:LINE: what`): as it is
        print(errors.message(exc), file=sys.stderr)
    else:
        print(f"trafficd {command}: {errors.message(exc)}", file=sys.stderr)
    if args is not None and getattr(args, "logs_to_stdout", False):  # daemons: the journal gets one JSON event
        from trafficd.runtime.logs import get_logger

        get_logger(command).error(
            f"{command}.start_refused" if code == errors.EX_CONFIG else f"{command}.exited",
            exit_code=code,
            error=type(exc).__name__,
            detail=errors.message(exc)[:500],
        )


def _closed_pipe() -> int:
    """The reader went away (`| head`): no traceback, no flush error at exit; 141 = 128 + SIGPIPE, as shells do."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 141


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    name = _command_name(words)
    if name in DEV_COMMAND_NAMES and name not in COMMANDS:
        print(
            f"trafficd: {name!r} is a development command: run `trafficd-dev {name}` "
            "(or `python -m trafficd.dev`) from a source checkout with the dev extra",
            file=sys.stderr,
        )
        return 2
    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], COMMAND_GC_THRESHOLD), *threshold[1:])  # see COMMAND_GC_THRESHOLD
    try:
        return run(words, build_parser, threshold)
    finally:
        gc.set_threshold(*threshold)


def dev_main(argv: Sequence[str] | None = None) -> int:
    """`trafficd-dev`: the development commands (demo, fake worker, benchmarks) when they are installed."""
    try:
        from trafficd.dev import cli as dev_cli
    except ModuleNotFoundError:
        print(
            "trafficd-dev: the development tools (demo, fake worker, benchmarks) are not part of the production "
            "install: use a source checkout (`python3 -m trafficd.bootstrap demo`)",
            file=sys.stderr,
        )
        return errors.EX_CONFIG
    code: int = dev_cli.main(argv)
    return code


if __name__ == "__main__":
    sys.exit(main())
