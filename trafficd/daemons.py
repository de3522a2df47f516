"""Command wiring for the long-running processes: `trafficd agent`, `trafficd controller`, `trafficd fake-worker`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from trafficd.fakeworker import Behaviour, serve


def _fake_worker(args: argparse.Namespace) -> int:
    behaviour = Behaviour(ttft_ms=args.ttft_ms, token_ms=args.token_ms, tokens=args.tokens)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, behaviour, name=args.name))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("fake-worker", help="run a fake OpenAI-compatible streaming worker (demo, tests)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--name", default="fake")
    p.add_argument("--ttft-ms", type=float, default=120.0)
    p.add_argument("--token-ms", type=float, default=20.0)
    p.add_argument("--tokens", type=int, default=8)
    p.set_defaults(func=_fake_worker)
