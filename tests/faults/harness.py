"""The fault suite's running system: the demo stack (redis-server, moto behind the recording proxy, fake workers,
agents, a controller — all real processes, `trafficd.dev.stack`) with short windows, plus what scenarios need:
more controllers, the leader's process, Route 53 weights read back, and the audit of every accepted batch."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import redis
from kit import log_events as events
from redis.sentinel import Sentinel

from trafficd.control.lease import lease_key
from trafficd.dev.stack import TEST_TIMING, Stack, Timing, set_worker, started_stack
from trafficd.dns.route53.provider import own_weights
from trafficd.policy.schema import Policy, load_policy
from trafficd.stats import store

from .auditor import Auditor, Window, report

LINES: list[str] = []  # one line per scenario, printed at the end of the run (conftest.py)

FAST = TEST_TIMING


def wait(what: str, predicate: Callable[[], bool], timeout_s: float = 40.0) -> float:
    """Wait for `predicate` with a deadline; returns when it became true (time.time())."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        time.sleep(0.2)
    return time.time()


@dataclass
class Faults:
    stack: Stack
    policy_file: Path
    ports: dict[str, int]
    policy: Policy = field(init=False)
    windows: list[Window] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.policy = load_policy(self.policy_file).policy
        self.redis = _sync_client(self.policy.redis.url)
        assert self.stack.moto is not None
        self.r53 = boto3.client("route53", endpoint_url=self.stack.moto.url, region_name="us-east-1")

    @property
    def proxy(self) -> Any:
        assert self.stack.moto is not None and self.stack.moto.proxy is not None
        return self.stack.moto.proxy

    def log(self, name: str) -> Path:
        return self.stack.workdir / f"{name}.log"

    def controller(self, name: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        args = ["--log-level", "DEBUG", "controller", "--policy", str(self.policy_file), *extra]
        return self.stack.spawn(name, args, env=env)

    def weights(self) -> dict[str, int | None]:
        return own_weights(self.policy, self.r53)

    def leader(self) -> str | None:
        """The name of the controller process holding the lease (its value is host:pid:token)."""
        try:
            holder = self.redis.get(lease_key(self.policy.redis.key_prefix, self.policy.service))
        except (redis.ConnectionError, redis.TimeoutError):  # Redis down or failing over: nobody known to lead
            return None
        if holder is None:
            return None
        pid = int(str(holder).split(":")[1])
        return next((n for n, p in self.stack.procs.items() if p.pid == pid and n.startswith("controller")), None)

    def writer_of(self, name: str) -> str:
        """The writer identity a controller process sends (host:pid), as the proxy records it."""
        return f"{os.uname().nodename}:{self.stack.procs[name].pid}"

    def slow(self, region: str, slow: bool = True) -> None:
        set_worker(self.ports[region], ttft_ms=FAST.slow_ttft_ms if slow else FAST.normal_ttft_ms)

    def draining(self, region: str, timeout_s: float = 60) -> float:
        """Wait until Route 53 shows `region` below full weight (its drain has begun); returns when."""
        return wait(f"{region} draining", lambda: (self.weights()[region] or 255) < 255, timeout_s)

    def leader_and_standby(self) -> tuple[str, str]:
        """The names of the leading controller and of the other one ("controller" and "controller-b")."""
        first = self.leader()
        assert first is not None
        return first, "controller-b" if first == "controller" else "controller"

    def healthy_and_led(self) -> None:
        wait("a leader and every region judged", lambda: self.leader() is not None and self._judged_all(), 60)

    def _judged_all(self) -> bool:
        name = self.leader()
        if name is None:
            return False
        seen = {e.get("region") for e in events(self.log(name)) if e.get("event") == "controller.region_judged"}
        return seen >= set(self.policy.region_names)

    def signal(self, name: str, sig: signal.Signals) -> None:
        os.killpg(self.stack.procs[name].pid, sig)

    def slice_counts(self, region: str) -> dict[int, int]:
        """Samples per slice id (floor(t0 / slice)) of `region` in Redis now, over the longest window."""

        async def read() -> dict[int, int]:
            client = store.redis_client(self.policy.redis)
            try:
                view = store.StatsView(client, self.policy)
                assert await view.refresh(time.time()), "Redis unreadable"
                return {sid: sk.n for sid, sk in view.regions[region].slices.items()}
            finally:
                await client.aclose()

        return asyncio.run(read())

    def audit(self, scenario: str, extra: str = "") -> list[str]:
        """Audit every batch the proxy accepted for this zone; print the scenario's one line; return problems."""
        zone = self.policy.dns.zone_id
        batches = [b for b in self.proxy.accepted_batches if b.zone_id == zone]
        problems = Auditor(self.policy, {}, self.windows).audit(batches)
        LINES.append(report(scenario, problems, len(batches), extra))
        return problems


def _sync_client(url: str) -> Any:
    """The harness's own Redis client: plain, or the primary a Sentinel set names (`redis+sentinel://s1,s2/name/db`)."""
    if not url.startswith("redis+sentinel://"):
        return redis.Redis.from_url(url, decode_responses=True)
    hosts, name, *db = url.removeprefix("redis+sentinel://").split("/")
    nodes = [(h.rpartition(":")[0], int(h.rpartition(":")[2])) for h in hosts.split(",")]
    timeouts = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}
    # redis-py leaves Sentinel's constructor and master_for unannotated
    sentinel = Sentinel(nodes, sentinel_kwargs=timeouts, decode_responses=True, **timeouts)  # type: ignore[no-untyped-call]
    return sentinel.master_for(name, db=int(db[0]) if db else 0)  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def fault_stack(workdir: Path, redis_url: str | None = None, timing: Timing = FAST) -> Iterator[Faults]:
    """The demo stack (FAST timing unless told); on its own redis-server, or on `redis_url` (a Sentinel set's)."""
    with started_stack(timing=timing, workdir=workdir, redis_url=redis_url) as (stack, policy_file, ports):
        yield Faults(stack, policy_file, ports)
