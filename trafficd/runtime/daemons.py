"""Wiring of the long-running processes: `trafficd agent`, `trafficd controller`, `trafficd fake-worker`.

Both daemons: load the policy or exit 78 (EX_CONFIG) having written nothing; SIGHUP re-reads the policy (an
invalid file is rejected and the last good policy stays); SIGTERM/SIGINT stop cleanly (the controller releases
its lease).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import TYPE_CHECKING

from trafficd.dev.fakeworker import Behaviour, serve
from trafficd.runtime import notify
from trafficd.runtime.reload import EX_CONFIG

if TYPE_CHECKING:
    from trafficd.policy.schema import Policy
    from trafficd.runtime.reload import PolicyHolder


async def _run_with_signals(holder: PolicyHolder, body: str, args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    from trafficd.runtime.reload import install_sighup

    install_sighup(loop, holder)  # the file is read off the loop: SIGTERM and /healthz never wait for it
    # the controller pings the watchdog itself, after each completed evaluation (trafficd.control.loop)
    watchdog = asyncio.create_task(_watchdog(stop) if body == "agent" else stop.wait())
    server = None
    port = args.metrics_port
    if port is None and body == "controller":
        port = holder.policy.controller.metrics_port
    if port is not None:
        from trafficd.runtime import metrics

        metrics.watch_policy(holder)
        server = await metrics.start_server(args.metrics_host, port, role=body)
    try:
        if body == "agent":
            from trafficd.probe.agent import run_agent

            notify.notify("READY=1", f"STATUS=probing region {args.region}")
            await run_agent(holder, args.region, stop=stop, agent_id=args.agent_id)
        else:
            from trafficd.control.loop import run_controller

            await run_controller(holder, stop=stop, dry_run=args.dry_run)
    finally:
        stop.set()
        notify.notify("STOPPING=1")
        await watchdog
        if server is not None:
            await server.cleanup()


async def _watchdog(stop: asyncio.Event) -> None:
    """Ping systemd's watchdog from the agent's event loop: a hung loop stops the pings and systemd restarts it."""
    interval_s = notify.watchdog_interval_s()
    if interval_s is None:
        return
    while not stop.is_set():
        notify.notify("WATCHDOG=1")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


def _agent(args: argparse.Namespace) -> int:
    from trafficd.runtime.reload import PolicyHolder, load_or_exit

    def has_region(policy: Policy) -> list[str]:
        """An agent refuses a policy (at start: exit 78; on reload: keep the last good) without its region."""
        if args.region in policy.regions:
            return []
        return [f"region {args.region!r} is not in the policy (regions: {', '.join(policy.region_names)})"]

    from trafficd.probe.agent import AgentConfigError

    loaded = load_or_exit(args.policy, accept=has_region)
    try:
        asyncio.run(_run_with_signals(PolicyHolder(args.policy, loaded, accept=has_region), "agent", args))
    except AgentConfigError as exc:  # e.g. the API key file or CA file named in the policy cannot be read
        print(f"{args.policy}: {exc}", file=sys.stderr)
        return EX_CONFIG
    return 0


def _controller(args: argparse.Namespace) -> int:
    from trafficd.runtime.reload import PolicyHolder, load_or_exit

    loaded = load_or_exit(args.policy)
    asyncio.run(_run_with_signals(PolicyHolder(args.policy, loaded), "controller", args))
    return 0


def _fake_worker(args: argparse.Namespace) -> int:
    behaviour = Behaviour(
        ttft_ms=args.ttft_ms,
        token_ms=args.token_ms,
        tokens=args.tokens,
        reasoning_tokens=args.reasoning_tokens,
        models=args.model or ["fake-model"],
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, behaviour, name=args.name))
    return 0


def _metrics_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics-port", type=int, default=None, help="serve /metrics and /healthz on this port")
    p.add_argument("--metrics-host", default="127.0.0.1", help="address for --metrics-port (default 127.0.0.1)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("agent", help="probe one region's workers and record samples in Redis")
    p.add_argument("--policy", required=True, help="policy file (YAML)")
    p.add_argument("--region", required=True)
    p.add_argument("--agent-id", default=None, help="name in heartbeats (default: host:pid)")
    _metrics_args(p)
    p.set_defaults(func=_agent, logs_to_stdout=True)

    p = sub.add_parser("controller", help="judge regions and shift Route 53 weights")
    p.add_argument("--policy", required=True, help="policy file (YAML)")
    p.add_argument("--dry-run", action="store_true", help="decide and log everything, write no DNS")
    _metrics_args(p)
    p.set_defaults(func=_controller, logs_to_stdout=True)

    p = sub.add_parser("fake-worker", help="run a fake streaming worker speaking every probed API (demo, tests)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--name", default="fake")
    p.add_argument("--ttft-ms", type=float, default=120.0)
    p.add_argument("--token-ms", type=float, default=20.0)
    p.add_argument("--tokens", type=int, default=8)
    p.add_argument("--reasoning-tokens", type=int, default=0)
    p.add_argument("--model", action="append", help="a model its model lists show (repeat; default fake-model)")
    p.set_defaults(func=_fake_worker)
