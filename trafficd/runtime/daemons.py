"""Wiring of the long-running processes: `trafficd agent` and `trafficd controller`.

Both daemons: load the policy and run the cheap preflight (secrets; the controller also AWS credentials and the
hosted zone) or exit 78 (EX_CONFIG) having written nothing and never signalled READY; SIGHUP re-reads the policy
(RELOADING=1 … READY=1 to systemd; an invalid file is rejected, STATUS= names it, the last good policy stays);
SIGTERM/SIGINT stop cleanly (the controller releases its lease).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import TYPE_CHECKING

from trafficd.cli import add_policy_argument
from trafficd.runtime import notify

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
            from trafficd.runtime import preflight

            await preflight.agent_start(holder.policy)  # secrets and TLS readable, or exit 78 without READY
            notify.notify("READY=1", f"STATUS=probing region {args.region}")
            await run_agent(holder, args.region, stop=stop, agent_id=args.agent_id, shard=args.shard)
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


def _shard_args(args: argparse.Namespace) -> None:
    """`--region R:IofN` (the systemd instance form) or `--shard I/N` → args.region, args.shard (UsageError: exit 2)."""
    from trafficd.errors import UsageError
    from trafficd.probe.schedule import Shard, ShardError, split_region_arg

    try:
        args.region, from_region = split_region_arg(args.region)
        args.shard = Shard.parse(args.shard) if args.shard else from_region
    except ShardError as exc:
        raise UsageError(str(exc)) from None


def _agent(args: argparse.Namespace) -> int:
    from trafficd.runtime.reload import PolicyHolder, load_or_exit

    _shard_args(args)

    def has_region(policy: Policy) -> list[str]:
        """An agent refuses a policy (at start: exit 78; on reload: keep the last good) without its region."""
        if args.region in policy.regions:
            return []
        return [f"region {args.region!r} is not in the policy (regions: {', '.join(policy.region_names)})"]

    loaded = load_or_exit(args.policy, accept=has_region)
    # An unreadable API key, CA file or Redis password: PreflightError (a ConfigError) before READY → exit 78
    asyncio.run(_run_with_signals(PolicyHolder(args.policy, loaded, accept=has_region), "agent", args))
    return 0


def _controller(args: argparse.Namespace) -> int:
    from trafficd.runtime import preflight
    from trafficd.runtime.reload import PolicyHolder, load_or_exit

    loaded = load_or_exit(args.policy)
    preflight.controller_start(loaded.policy)  # no Redis password, AWS credentials or zone: exit 78, no READY
    asyncio.run(_run_with_signals(PolicyHolder(args.policy, loaded), "controller", args))
    return 0


def _metrics_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics-port", type=int, default=None, help="serve /metrics and /healthz on this port")
    p.add_argument("--metrics-host", default="127.0.0.1", help="address for --metrics-port (default 127.0.0.1)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("agent", help="probe one region's workers and record samples in Redis")
    add_policy_argument(p)
    p.add_argument("--region", required=True)
    p.add_argument("--agent-id", default=None, help="name in heartbeats (default: host:pid)")
    p.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="probe only shard I of N of the region's series (several agents per region; also --region R:IofN)",
    )
    _metrics_args(p)
    p.set_defaults(func=_agent, logs_to_stdout=True)

    p = sub.add_parser("controller", help="judge regions and shift Route 53 weights")
    add_policy_argument(p)
    p.add_argument("--dry-run", action="store_true", help="decide and log everything, write no DNS")
    _metrics_args(p)
    p.set_defaults(func=_controller, logs_to_stdout=True)
