"""`trafficd demo`: the whole system on one machine, with real components, ending by itself.

Starts redis-server (unless one is given), moto server as the local Route 53 API (with a hosted zone and the
owned records), three fake regional inference workers, one agent per region, a controller and simulated users
(`loadgen`: us-east 5× eu-west, each request sent where Route 53's weights say), all as separate processes. Every
progress line shows each region's weight beside its load measured at its worker (vLLM-format /metrics). Then it
makes one region slow (p99 well over the 3 s SLO), shows that region's weight in
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

from trafficd.dev.loadgen import WorkerRate, read_worker_load
from trafficd.dev.services import LOOPBACK
from trafficd.dev.stack import DEMO_ENV, REGIONS, Stack, Timing, set_worker, started_stack
from trafficd.policy.schema import Policy, load_policy
from trafficd.runtime import logs

__all__ = ["DEMO_USERS", "REGIONS", "DemoResult", "Timing", "run_demo", "set_worker", "started_stack"]

# the simulated users' requests per second: us-east has 5× eu-west's users (each worker also answers ~5 probes/s)
DEMO_USERS = {"us-east": 40.0, "eu-west": 8.0, "ap-southeast": 16.0}
LOAD_EVERY_S = 4.0  # a weights-and-load line at least this often

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


class LoadView:
    """Each region's load as its worker measures it: completed requests/s from its vLLM counter, and its queue."""

    def __init__(self, ports: dict[str, int]) -> None:
        self.urls = {r: f"http://{LOOPBACK}:{p}" for r, p in ports.items()}
        self.rates = {r: WorkerRate() for r in ports}

    def read(self) -> None:
        for region, url in self.urls.items():
            with contextlib.suppress(OSError, ValueError):  # a worker that does not answer shows "-"
                self.rates[region].add(read_worker_load(url))

    def per_second(self) -> dict[str, float | None]:
        return {r: rate.per_second() for r, rate in self.rates.items()}

    def completed(self) -> dict[str, float]:
        return {r: (rate.latest.completed if rate.latest else 0.0) for r, rate in self.rates.items()}

    def column(self, region: str) -> str:
        rate, latest = self.rates[region].per_second(), self.rates[region].latest
        queued = f" +{latest.waiting:.0f} queued" if latest and latest.waiting else ""
        return ("-" if rate is None else f"{rate:.1f} req/s") + queued


def _users_served(log: Path) -> dict[str, dict[str, int]]:
    """Where each region's simulated users were served (the load generator's last line), or {}."""
    for ev in reversed(LogTail(log).new_events()):
        if ev.get("event") == "loadgen.stopped":
            served = ev.get("served") or {}
            return {src: row for src, row in served.items() if isinstance(row, dict)}
    return {}


@dataclass
class DemoResult:
    drained: bool = False
    restored: bool = False
    # every distinct reading of the own-region weights from Route 53, with seconds since the start
    weights_seen: list[tuple[float, dict[str, int | None]]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # the controller's log events
    # every load line: seconds since the start, requests/s measured at each region's worker
    loads_seen: list[tuple[float, dict[str, float | None]]] = field(default_factory=list)
    completed: dict[str, float] = field(default_factory=dict)  # each worker's request counter at the end
    users_served: dict[str, dict[str, int]] = field(default_factory=dict)  # users' region → serving region → n

    @property
    def ok(self) -> bool:
        return self.drained and self.restored


class _Watch:
    """What the demo follows on every tick: the processes, the controller's log, Route 53's weights, the load."""

    def __init__(
        self,
        stack: Stack,
        policy: Policy,
        r53: Any,
        loads: LoadView,
        result: DemoResult,
        say: Callable[[str], None],
        t_start: float,
    ) -> None:
        self.stack, self.policy, self.r53, self.loads, self.result = stack, policy, r53, loads, result
        self.say, self.t_start = say, t_start
        self.tail = LogTail(stack.workdir / "controller.log")
        self.last_weights: dict[str, int | None] = {}
        self.last_line = -LOAD_EVERY_S
        self.healthy_seen: set[str] = set()
        self.capacity: dict[str, dict[str, Any]] = {}  # region → the capacity block of its latest judgement
        self.users_tail = LogTail(stack.workdir / "loadgen.log")
        self.users_since: float | None = None  # when the simulated users started (seconds since the start)

    def tick(self) -> None:
        for name, proc in self.stack.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {self.stack.workdir}/{name}.log")
        for ev in self.tail.new_events():
            self.result.events.append(ev)
            if (
                ev.get("event") in ("controller.region_judged", "controller.weights_shifted")
                and ev.get("state_after") == "healthy"
            ):
                self.healthy_seen.add(str(ev.get("region")))
            if isinstance(ev.get("capacity"), dict):  # live capacity: the controller's view of this region
                self.capacity[str(ev.get("region"))] = ev["capacity"]
            if ev.get("event") in SHOWN_EVENTS:
                self.say("   " + _describe(ev))
        if self.users_since is None and any(e.get("event") == "loadgen.started" for e in self.users_tail.new_events()):
            self.users_since = time.monotonic() - self.t_start
        self._weights_and_load()

    def show(self, weights: dict[str, int | None], now: float) -> None:
        """One progress line: each region's own weight in Route 53 beside the load its worker measures."""
        line = "  ".join(f"{r}={w} ({self._column(r)})" for r, w in weights.items())
        self.say("Route 53 own-region weights (load at the workers): " + line)
        self.result.loads_seen.append((now, self.loads.per_second()))
        self.last_line = now

    def _column(self, region: str) -> str:
        """Its load measured at the worker and, with live capacity, the headroom the controller judged with."""
        headroom = self.capacity.get(region, {}).get("headroom_rps")
        return self.loads.column(region) + ("" if headroom is None else f", headroom {float(headroom):.0f} req/s")

    def warmed_up(self, users: bool) -> bool:
        """Every region judged healthy and, with users, their load measured over a whole window."""
        if not self.healthy_seen >= set(REGIONS):
            return False
        window = next(iter(self.loads.rates.values())).window_s
        since = self.users_since
        return not users or (since is not None and time.monotonic() - self.t_start >= since + window)

    def _weights_and_load(self) -> None:
        from trafficd.dns.route53 import provider as route53

        weights = route53.own_weights(self.policy, self.r53)
        self.loads.read()
        now = time.monotonic() - self.t_start
        if weights != self.last_weights or now - self.last_line >= LOAD_EVERY_S:
            self.show(weights, now)
        if weights != self.last_weights:
            self.last_weights = weights
            self.result.weights_seen.append((now, weights))


def run_demo(
    *,
    timing: Timing | None = None,
    redis_url: str | None = None,
    slow_region: str = "eu-west",
    workdir: Path | None = None,
    users: dict[str, float] | None = None,
    out: TextIO = sys.stdout,
) -> DemoResult:
    """Run the drain-and-restore story; `ok` only if both the drain and the restore were seen in Route 53."""
    from trafficd.dns.route53 import client as r53client
    from trafficd.dns.route53.wire import MAX_WEIGHT

    os.environ.update(DEMO_ENV)  # dummy credentials: the demo only ever talks to its own moto server
    logs.configure("WARNING")  # in this process only; every daemon's log is in its own file in the workdir
    timing = timing or Timing()
    t_start = time.monotonic()

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - t_start:6.1f}s] {msg}", file=out, flush=True)

    users = DEMO_USERS if users is None else users
    result = DemoResult()
    drained = restored = False
    started = started_stack(timing=timing, redis_url=redis_url, workdir=workdir, users=users, live_capacity=True)
    with started as (stack, policy_file, ports):
        say(f"started redis, moto (Route 53 API), 3 workers, 3 agents, controller; logs in {stack.workdir}")
        if users:
            rates = ", ".join(f"{r} {rate:g}/s" for r, rate in users.items())
            say(f"simulated users ({rates}) send their requests where Route 53's weights say")
        policy = load_policy(policy_file).policy
        watch = _Watch(stack, policy, r53client.route53_client(policy), LoadView(ports), result, say, t_start)
        tick = watch.tick

        say("waiting for every region to be judged healthy" + (" and the users' load to show" if users else ""))
        if not wait_until(
            "healthy regions and the users' load",
            lambda: watch.warmed_up(bool(users)),
            timing.warmup_timeout_s,
            tick,
            out,
        ):
            return result
        watch.show(watch.last_weights, time.monotonic() - t_start)
        say(f"making {slow_region} slow: first token after {timing.slow_ttft_ms / 1000:.1f}s (SLO p99 ≤ 3s)")
        set_worker(ports[slow_region], ttft_ms=timing.slow_ttft_ms)
        drained = wait_until(
            f"{slow_region} drained",
            lambda: watch.last_weights.get(slow_region) == 0,
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
                lambda: watch.last_weights.get(slow_region) == MAX_WEIGHT,
                timing.restore_timeout_s,
                tick,
                out,
            )
            if restored:
                say(f"RESTORED: {slow_region} serves its own users again")
        result.completed = watch.loads.completed()
    result.drained, result.restored = drained, restored
    result.users_served = _users_served(stack.workdir / "loadgen.log")
    for source, served in sorted(result.users_served.items(), key=lambda kv: list(REGIONS).index(kv[0])):
        by = sorted(served.items(), key=lambda kv: list(REGIONS).index(kv[0]))
        say(f"{source}'s users were served by " + ", ".join(f"{d} {n}" for d, n in by))
    say(f"demo {'passed' if result.ok else 'FAILED'}: drain observed={drained}, restore observed={restored}")
    return result


def _num(v: Any, digits: int = 0) -> str:
    return "-" if v is None else f"{float(v):.{digits}f}"


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100.0 * float(v):.0f} %"


def _describe(ev: dict[str, Any]) -> str:
    """One readable line for a controller or Route 53 event (the full JSON is in the workdir logs). A shift shows the
    evidence the judge counts first — the share of probes over the SLO, running probes included (early records) —
    then the p99 of the probes that have finished, which trails it while slow probes are still running."""
    name = ev.get("event", "")
    if name == "controller.weights_shifted":
        row = ", ".join(f"{d} {float(w):.2f}" for d, w in (ev.get("weights_after") or {}).items() if float(w) > 0)
        capacity = [str(r) for r in ev.get("reasons") or [] if str(r).startswith("capacity")]
        return (
            f"{name} region={ev.get('region')} {ev.get('state_before')}→{ev.get('state_after')} "
            f"serving {_num(ev.get('serving_fraction_before'), 2)}→{_num(ev.get('serving_fraction_after'), 2)} "
            f"(over the SLO {_pct(ev.get('over_slo_fraction'))} of n={ev.get('n')}, p99 of the finished "
            f"{_num(ev.get('p99_ms'))} ms, errors {_num(ev.get('error_rate'), 3)}, by {ev.get('decided_by')}) "
            f"its users → {row}" + "".join(f"; {c}" for c in capacity)
        )
    if name == "route53.changes_applied":
        moved = [
            f"{c['after']['set_identifier']} {(c.get('before') or {}).get('weight')}→{c['after'].get('weight')}"
            for c in ev.get("changes", [])
            if c.get("after") and c["after"].get("weight") is not None
        ]
        other = [  # e.g. the writer-epoch TXT record a new leader takes over with (no weight moves)
            f"{c['after'].get('type')} {c['after'].get('name')} → {' '.join(c['after'].get('values') or [])}"
            for c in ev.get("changes", [])
            if c.get("after") and c["after"].get("weight") is None
        ]
        return f"{name} change_id={ev.get('change_id')}: " + ", ".join(moved + other)
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
