"""`trafficd-dev` (or `python -m trafficd.dev`): the development commands, kept out of the production CLI.

demo, fake-worker and the benchmarks need the source checkout's `dev` package and, for the demo, the dev extra
(moto). They are not in the wheel: a production install has `trafficd` only. Errors map to exit codes exactly as
in `trafficd` (the same runner).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
from collections.abc import Sequence

from trafficd.cli import Command, build_parser, run
from trafficd.errors import ConfigError

# name → module (whose register() adds it) and help; keep sorted
DEV_COMMANDS: dict[str, Command] = {
    "bench-cli": Command("trafficd.dev.bench.cli", "start-up time of trafficd commands (new process each run)"),
    "bench-decisions": Command(
        "trafficd.dev.bench.decisions", "measure false shifts and detection delays of the trip rule"
    ),
    "bench-dns": Command("trafficd.dev.bench.dns", "Route 53 records and API requests at 3 / 10 / 30 regions"),
    "bench-probe": Command("trafficd.dev.bench.probe", "measure how much TTFT the probe adds (fidelity benchmark)"),
    "bench-simulate": Command(
        "trafficd.dev.bench.simulate", "time `trafficd simulate --samples` on 1 h × 3 regions × 2 probes/s"
    ),
    "demo": Command("trafficd.dev.demo", "run the local drain-and-restore demo with real components (about a minute)"),
    "fake-worker": Command("trafficd.dev.cli", "run a fake streaming worker speaking every probed API (demo, tests)"),
    "loadgen": Command("trafficd.dev.loadgen", "simulated users per region, sent where Route 53's weights say (demo)"),
}
# third-party modules a command needs beyond the production dependencies (from the `dev` extra)
NEEDS: dict[str, tuple[str, ...]] = {"demo": ("moto",)}


def _fake_worker(args: argparse.Namespace) -> int:
    from trafficd.dev.fakeworker import Behaviour, serve

    behaviour = Behaviour(
        ttft_ms=args.ttft_ms,
        token_ms=args.token_ms,
        tokens=args.tokens,
        reasoning_tokens=args.reasoning_tokens,
        models=args.model or ["fake-model"],
        max_num_seqs=args.max_num_seqs,
        kv_cache_tokens=args.kv_cache_tokens,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, behaviour, name=args.name))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("fake-worker", help=DEV_COMMANDS["fake-worker"].help)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--name", default="fake")
    p.add_argument("--ttft-ms", type=float, default=120.0)
    p.add_argument("--token-ms", type=float, default=20.0)
    p.add_argument("--tokens", type=int, default=8)
    p.add_argument("--reasoning-tokens", type=int, default=0)
    p.add_argument("--max-num-seqs", type=int, default=256, help="requests served at once; more queue (default 256)")
    p.add_argument("--kv-cache-tokens", type=int, default=262_144, help="KV-cache capacity in tokens")
    p.add_argument("--model", action="append", help="a model its model lists show (repeat; default fake-model)")
    p.set_defaults(func=_fake_worker)


def missing_extras(command: str | None) -> list[str]:
    return [m for m in NEEDS.get(command or "", ()) if importlib.util.find_spec(m) is None]


def _parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    words = [w for w in argv if not w.startswith("-")]
    missing = missing_extras(words[0] if words else None)
    if missing:
        raise ConfigError(
            f"`{words[0]}` needs {', '.join(missing)} from the dev extra: "
            "pip install -e '.[dev]' in a source checkout (python3 -m trafficd.bootstrap demo does it all)"
        )
    return build_parser(
        argv, DEV_COMMANDS, prog="trafficd-dev", description="trafficd development tools: demo, fake worker, benchmarks"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run(argv, _parser)
