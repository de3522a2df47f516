"""Simulated users for the demo: per region, streaming requests at a set rate, sent where Route 53 says.

Each region's users arrive as a Poisson process at their rate (requests/s, open loop: a slow answer does not slow
the arrivals, as with real users). Each request picks its destination the way DNS resolution would: from the
weights of the user's region's pool, read back from Route 53 with boto3 (`ListResourceRecordSets` on the zone,
through the same reading code as the controller: `dns.route53.client.list_zone` and `dns.records`) every
`refresh_s`; then it streams a chat completion from one of that region's workers and reads it to the end. So load
follows DNS: when the controller drains a region, its users' requests go where the pool's weights now point.
Before the first read, or while Route 53 cannot be read (`loadgen.route53_read_failed`, once per episode), the
last weights read are kept (at first: each region serves its own users).

`served_rates()` counts the answers each destination region completed over the last seconds; the demo itself shows
the load measured at the workers (`WorkerLoad`, their vLLM-format /metrics, which include the agents' probes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import time
import urllib.request
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from trafficd.dns import records as rec
from trafficd.dns.route53.client import list_zone, route53_client
from trafficd.model import TrafficMatrix, identity_matrix
from trafficd.policy.schema import Policy
from trafficd.runtime.logs import get_logger

if TYPE_CHECKING:
    from mypy_boto3_route53 import Route53Client

_log = get_logger("loadgen")
MAX_IN_FLIGHT = 2000  # per source region: beyond it a user's request is dropped (counted), not queued in memory
STOP_GRACE_S = 10.0  # stopping: how long the requests in flight may take to end


class LoadGen:
    """Users of every region with a rate, sending streaming requests where Route 53's weights say."""

    def __init__(
        self,
        policy: Policy,
        rates: Mapping[str, float],
        *,
        workers: Mapping[str, Sequence[str]] | None = None,
        client: Route53Client | None = None,
        refresh_s: float = 1.0,
        window_s: float = 5.0,
        max_tokens: int = 8,
        rng: random.Random | None = None,
    ) -> None:
        unknown = set(rates) - set(policy.region_names)
        if unknown:
            raise ValueError(f"users for unknown regions {sorted(unknown)}; the policy has {policy.region_names}")
        self.policy = policy
        self.rates = dict(rates)
        self.workers = {r: list(u) for r, u in (workers or _policy_workers(policy)).items()}
        self.client = client or route53_client(policy)
        self.refresh_s, self.window_s, self.max_tokens = refresh_s, window_s, max_tokens
        self.rng = rng or random.Random()
        self.matrix: TrafficMatrix = identity_matrix(policy.region_names)
        self.served: Counter[tuple[str, str]] = Counter()  # (users' region, serving region) → answers completed
        self.failed: Counter[tuple[str, str]] = Counter()
        self.dropped: Counter[str] = Counter()
        self._recent: deque[tuple[float, str]] = deque()  # (monotonic end, serving region)
        self._in_flight: dict[str, int] = dict.fromkeys(policy.region_names, 0)
        self._read_failing = False
        self._stopping = asyncio.Event()

    # ------------------------------------------------------------ where a user's request goes

    def refresh(self) -> None:
        """Read the pools' weights back from Route 53 (blocking; called in a thread)."""
        try:
            read = rec.matrix_from_records(self.policy, list_zone(self.client, self.policy.dns.zone_id)[0])
        except Exception as exc:
            if not self._read_failing:
                _log.warning("loadgen.route53_read_failed", error=type(exc).__name__, detail=str(exc)[:300])
            self._read_failing = True
            return
        if self._read_failing:
            _log.info("loadgen.route53_read_recovered")
        self._read_failing = False
        self.matrix = {**self.matrix, **read}

    def destination(self, source: str) -> str:
        """The serving region for one request of `source`'s users, drawn by the pool's weights."""
        row = {d: w for d, w in self.matrix.get(source, {source: 1.0}).items() if w > 0}
        if not row:
            return source
        regions = list(row)
        return self.rng.choices(regions, weights=[row[d] for d in regions])[0]

    # ------------------------------------------------------------ what was served

    def served_rates(self, now: float | None = None) -> dict[str, float]:
        """Answers completed per second by each serving region over the last `window_s`."""
        now = time.monotonic() if now is None else now
        while self._recent and self._recent[0][0] < now - self.window_s:
            self._recent.popleft()
        counts = Counter(region for _, region in self._recent)
        return {r: counts[r] / self.window_s for r in self.policy.region_names}

    def share(self, source: str) -> dict[str, float]:
        """Where `source`'s completed answers were served, as shares of them (since the start)."""
        total = sum(n for (s, _), n in self.served.items() if s == source)
        return {d: (self.served[(source, d)] / total if total else 0.0) for d in self.policy.region_names}

    def served_by_region(self) -> dict[str, int]:
        """Answers completed by each serving region (since the start)."""
        return {d: sum(n for (_, dest), n in self.served.items() if dest == d) for d in self.policy.region_names}

    def served_matrix(self) -> dict[str, dict[str, int]]:
        """Answers completed, by the users' region, then by the serving region."""
        out: dict[str, dict[str, int]] = {}
        for (source, dest), n in sorted(self.served.items()):
            out.setdefault(source, {})[dest] = n
        return out

    # ------------------------------------------------------------ running

    def stop(self) -> None:
        """No new arrivals; `run` returns once the requests in flight have ended (at most `STOP_GRACE_S`)."""
        self._stopping.set()

    async def run(self) -> None:
        """Run every region's users and the Route 53 refresh until `stop()` (or cancelled)."""
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=60, sock_connect=5)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            await asyncio.to_thread(self.refresh)  # the first users go where Route 53 says already
            _log.info("loadgen.started", rates=self.rates, workers=self.workers, refresh_s=self.refresh_s)
            users = [asyncio.create_task(self._users(http, r, rate)) for r, rate in self.rates.items() if rate > 0]
            refresher = asyncio.create_task(self._refresher())
            try:
                await asyncio.gather(*users)
            finally:
                for t in [*users, refresher]:
                    t.cancel()
                await asyncio.gather(*users, refresher, return_exceptions=True)

    async def _refresher(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            await asyncio.to_thread(self.refresh)

    async def _users(self, http: aiohttp.ClientSession, source: str, rate: float) -> None:
        requests: set[asyncio.Task[None]] = set()
        try:
            while not await self._stopped_within(self.rng.expovariate(rate)):
                if self._in_flight[source] >= MAX_IN_FLIGHT:
                    self.dropped[source] += 1
                    continue
                task = asyncio.create_task(self._request(http, source, self.destination(source)))
                requests.add(task)
                task.add_done_callback(requests.discard)
            if requests:  # stopping: let the requests in flight end, so both ends count the same answers
                await asyncio.wait(list(requests), timeout=STOP_GRACE_S)
        finally:
            for task in list(requests):
                task.cancel()

    async def _stopped_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        return self._stopping.is_set()

    async def _request(self, http: aiohttp.ClientSession, source: str, dest: str) -> None:
        url = self.rng.choice(self.workers[dest]).rstrip("/") + "/v1/chat/completions"
        model = self.policy.models[0].name if self.policy.models else "fake-model"
        body = {
            "model": model,
            "messages": [{"role": "user", "content": "a simulated user's question"}],
            "stream": True,
            "max_tokens": self.max_tokens,
        }
        self._in_flight[source] += 1
        try:
            async with http.post(url, json=body) as resp:
                await resp.read()
                ok = resp.status == 200
        except (TimeoutError, aiohttp.ClientError):
            ok = False
        finally:
            self._in_flight[source] -= 1
        if ok:
            self.served[(source, dest)] += 1
            self._recent.append((time.monotonic(), dest))
        else:
            self.failed[(source, dest)] += 1


def _policy_workers(policy: Policy) -> dict[str, list[str]]:
    """Each region's listed workers (a region found by DNS discovery needs `workers=` given)."""
    return {name: [str(w.url) for w in region.workers] for name, region in policy.regions.items()}


# ---------------------------------------------------------------- the load measured at a worker


@dataclass(frozen=True, slots=True)
class WorkerLoad:
    """One reading of a worker's vLLM-format /metrics."""

    at: float  # monotonic seconds
    running: float
    waiting: float
    kv_cache_usage: float
    completed: float  # vllm:request_success_total, every finished_reason


def parse_worker_metrics(text: str, at: float) -> WorkerLoad:
    """The load figures in a vLLM /metrics page (summed over the labels: the fake has one model and one engine)."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return WorkerLoad(
        at=at,
        running=values.get("vllm:num_requests_running", 0.0),
        waiting=values.get("vllm:num_requests_waiting", 0.0),
        kv_cache_usage=values.get("vllm:kv_cache_usage_perc", 0.0),
        completed=values.get("vllm:request_success_total", 0.0),
    )


def read_worker_load(url: str, timeout_s: float = 2.0) -> WorkerLoad:
    """GET `url`/metrics now (blocking; loopback in the demo)."""
    with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=timeout_s) as resp:
        return parse_worker_metrics(resp.read().decode(), time.monotonic())


class WorkerRate:
    """Completed requests per second at one worker, from its counter over the last `window_s`."""

    def __init__(self, window_s: float = 3.0) -> None:
        self.window_s = window_s
        self.readings: deque[WorkerLoad] = deque()

    def add(self, reading: WorkerLoad) -> None:
        self.readings.append(reading)
        while len(self.readings) > 2 and self.readings[1].at <= reading.at - self.window_s:
            self.readings.popleft()

    @property
    def latest(self) -> WorkerLoad | None:
        return self.readings[-1] if self.readings else None

    def per_second(self) -> float | None:
        if len(self.readings) < 2:
            return None
        first, last = self.readings[0], self.readings[-1]
        span = last.at - first.at
        return max(0.0, last.completed - first.completed) / span if span > 0 else None


def rates_arg(values: Sequence[str]) -> dict[str, float]:
    """`REGION=RATE` pairs (requests/s) from the command line."""
    out: dict[str, float] = {}
    for v in values:
        region, sep, rate = v.partition("=")
        try:
            out[region] = float(rate) if sep else float("nan")
        except ValueError:
            out[region] = float("nan")
        if not (out[region] >= 0):
            raise ValueError(f"--users {v!r}: expected REGION=RATE with a rate in requests/s ≥ 0, e.g. us-east=20")
    return out


# ---------------------------------------------------------------- `python -m trafficd.dev loadgen`


def _run(args: argparse.Namespace) -> int:
    from trafficd.errors import UsageError
    from trafficd.policy.schema import load_policy

    policy = load_policy(Path(args.policy)).policy
    try:
        gen = LoadGen(policy, rates_arg(args.users or []), refresh_s=args.refresh_s)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc

    async def main() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, gen.stop)
        await gen.run()

    with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
        asyncio.run(main())
    _log.info("loadgen.stopped", served=gen.served_matrix(), failed=sum(gen.failed.values()), dropped=gen.dropped)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("loadgen", help="simulated users per region, sent where Route 53's weights say (demo)")
    p.add_argument("--policy", required=True, help="the policy whose zone, pools and workers to use")
    p.add_argument("--users", action="append", metavar="REGION=RATE", help="a region's users, requests/s (repeat)")
    p.add_argument("--refresh-s", type=float, default=1.0, help="how often Route 53's weights are read back")
    p.set_defaults(func=_run, logs_to_stdout=True)
