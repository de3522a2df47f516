"""`trafficd demo`: the whole system on one machine, with real components, ending by itself.

Starts redis-server (unless one is given), moto server as the local Route 53 API (with a hosted zone and the
owned records), three fake regional inference workers, one agent per region and a controller, all as
separate processes. Then it makes one region slow (p99 well over the 3 s SLO), shows that region's weight in
Route 53 going down while the others serve, removes the slowness and shows the weight coming back. It exits
0 only if the drain and the restore were both observed in Route 53 (read back with boto3), and stops
everything it started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from trafficd.dev.stack import DEMO_ENV, REGIONS, Timing, set_worker, started_stack
from trafficd.policy.schema import load_policy
from trafficd.runtime import logs

__all__ = ["REGIONS", "DemoResult", "Timing", "run_demo", "set_worker", "started_stack"]

SHOWN_EVENTS = {
    "controller.weights_shifted",
    "route53.changes_applied",
    "route53.batch_rejected",
    "controller.reconcile_failed",
    "lease.acquired",
}


class LogTail:
    """Follows a JSON-lines log file and returns new events."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def new_events(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        events = []
        for line in data[:end].splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
        return events


def wait_until(
    what: str,
    predicate: Callable[[], bool],
    timeout_s: float,
    tick: Callable[[], None],
    out: TextIO,
) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        tick()
        if predicate():
            return True
        time.sleep(0.5)
    print(f"!! gave up waiting for {what} after {timeout_s:.0f}s", file=out)
    return False


@dataclass
class DemoResult:
    drained: bool = False
    restored: bool = False
    # every distinct reading of the own-region weights from Route 53, with seconds since the start
    weights_seen: list[tuple[float, dict[str, int | None]]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # the controller's log events

    @property
    def ok(self) -> bool:
        return self.drained and self.restored


def run_demo(
    *,
    timing: Timing | None = None,
    redis_url: str | None = None,
    slow_region: str = "eu-west",
    workdir: Path | None = None,
    out: TextIO = sys.stdout,
) -> DemoResult:
    """Run the drain-and-restore story; `ok` only if both the drain and the restore were seen in Route 53."""
    from trafficd.dns.route53 import client as r53client
    from trafficd.dns.route53 import provider as route53
    from trafficd.dns.route53.wire import MAX_WEIGHT

    os.environ.update(DEMO_ENV)  # dummy credentials: the demo only ever talks to its own moto server
    logs.configure("WARNING")  # in this process only; every daemon's log is in its own file in the workdir
    timing = timing or Timing()
    t_start = time.monotonic()

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - t_start:6.1f}s] {msg}", file=out, flush=True)

    result = DemoResult()
    drained = restored = False
    with started_stack(timing=timing, redis_url=redis_url, workdir=workdir) as (stack, policy_file, ports):
        say(f"started redis, moto (Route 53 API), 3 workers, 3 agents, controller; logs in {stack.workdir}")
        policy = load_policy(policy_file).policy
        r53 = r53client.route53_client(policy)
        tail = LogTail(stack.workdir / "controller.log")
        last_weights: dict[str, int | None] = {}
        healthy_seen: set[str] = set()

        def tick() -> None:
            nonlocal last_weights
            for name, proc in stack.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}; see {stack.workdir}/{name}.log")
            for ev in tail.new_events():
                result.events.append(ev)
                if (
                    ev.get("event") in ("controller.region_judged", "controller.weights_shifted")
                    and ev.get("state_after") == "healthy"
                ):
                    healthy_seen.add(str(ev.get("region")))
                if ev.get("event") in SHOWN_EVENTS:
                    say("   " + _describe(ev))
            weights = route53.own_weights(policy, r53)
            if weights != last_weights:
                say("Route 53 own-region weights: " + "  ".join(f"{r}={w}" for r, w in weights.items()))
                last_weights = weights
                result.weights_seen.append((time.monotonic() - t_start, weights))

        say("waiting for every region to be judged healthy")
        if not wait_until("healthy regions", lambda: healthy_seen >= set(REGIONS), timing.warmup_timeout_s, tick, out):
            return result
        say(f"making {slow_region} slow: first token after {timing.slow_ttft_ms / 1000:.1f}s (SLO p99 ≤ 3s)")
        set_worker(ports[slow_region], ttft_ms=timing.slow_ttft_ms)
        drained = wait_until(
            f"{slow_region} drained",
            lambda: last_weights.get(slow_region) == 0,
            timing.drain_timeout_s,
            tick,
            out,
        )
        if drained:
            say(f"DRAINED: {slow_region}'s users are served by its neighbours")
        say(f"removing the slowness from {slow_region}")
        set_worker(ports[slow_region], ttft_ms=timing.normal_ttft_ms)
        if drained:
            restored = wait_until(
                f"{slow_region} restored",
                lambda: last_weights.get(slow_region) == MAX_WEIGHT,
                timing.restore_timeout_s,
                tick,
                out,
            )
            if restored:
                say(f"RESTORED: {slow_region} serves its own users again")
    result.drained, result.restored = drained, restored
    say(f"demo {'passed' if result.ok else 'FAILED'}: drain observed={drained}, restore observed={restored}")
    return result


def _num(v: Any, digits: int = 0) -> str:
    return "-" if v is None else f"{float(v):.{digits}f}"


def _describe(ev: dict[str, Any]) -> str:
    """One readable line for a controller or Route 53 event (the full JSON is in the workdir logs)."""
    name = ev.get("event", "")
    if name == "controller.weights_shifted":
        row = ", ".join(f"{d} {float(w):.2f}" for d, w in (ev.get("weights_after") or {}).items() if float(w) > 0)
        return (
            f"{name} region={ev.get('region')} {ev.get('state_before')}→{ev.get('state_after')} "
            f"serving {_num(ev.get('serving_fraction_before'), 2)}→{_num(ev.get('serving_fraction_after'), 2)} "
            f"(p99 {_num(ev.get('p99_ms'))} ms, n={ev.get('n')}, errors {_num(ev.get('error_rate'), 3)}, "
            f"by {ev.get('decided_by')}) its users → {row}"
        )
    if name == "route53.changes_applied":
        moved = [
            f"{c['after']['set_identifier']} {(c.get('before') or {}).get('weight')}→{c['after'].get('weight')}"
            for c in ev.get("changes", [])
            if c.get("after") and c["after"].get("weight") is not None
        ]
        return f"{name} change_id={ev.get('change_id')}: " + ", ".join(moved)
    return f"{name} " + " ".join(f"{k}={v}" for k, v in ev.items() if k not in ("event", "timestamp", "level"))


def _run(args: argparse.Namespace) -> int:
    keep = args.workdir is not None
    workdir = Path(args.workdir) if keep else Path(tempfile.mkdtemp(prefix="trafficd-demo-"))
    result = run_demo(redis_url=args.redis_url, slow_region=args.slow_region, workdir=workdir)
    if result.ok and not keep:
        shutil.rmtree(workdir, ignore_errors=True)  # passed: nothing left behind
    elif not result.ok:
        print(f"policy and every process's log kept in {workdir}", file=sys.stderr)
    return 0 if result.ok else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run the local drain-and-restore demo with real components (about a minute)")
    p.add_argument("--redis-url", help="use this Redis instead of starting redis-server")
    p.add_argument("--slow-region", default="eu-west", choices=list(REGIONS))
    p.add_argument("--workdir", help="keep policy and logs here (default: a temporary directory)")
    p.set_defaults(func=_run)
