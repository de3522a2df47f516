"""The agent's capacity scraper: every `capacity.scrape_every`, read each worker's metrics endpoint and store the
region's load and headroom figures (stats/capacity.py) beside the samples in Redis.

The metrics URL is the worker's scheme, host and port with `capacity.metrics_path` (default `/metrics`), fetched
with aiohttp (`capacity.timeout`, the probe section's TLS settings) and parsed by `capacity_metrics.parse`. The
completed-request counter's rate and the mean running are taken over a worker's last six scrapes. A worker whose
endpoint cannot be read or parsed is logged once per episode (`capacity.scrape_failed`, WARNING;
`capacity.scrape_recovered` when it answers again) and retried with capped backoff; its last figures age in Redis
until the region turns stale and the controller falls back to the declared headroom. A failed Redis write is
logged once per episode too (`capacity.write_failed` / `capacity.write_recovered`); the next scrape writes fresh
figures anyway. With `capacity.load_query` the region's load also comes from Prometheus (probe/load_query.py; a
failure is `capacity.query_failed` once per episode, `capacity.query_recovered`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

from trafficd.backoff import Backoff
from trafficd.policy.capacity import Capacity
from trafficd.policy.schema import Policy
from trafficd.probe.capacity_metrics import MetricsError, parse
from trafficd.probe.discovery import WorkerRef
from trafficd.probe.load_query import LoadQueryError, fetch_load, query_text
from trafficd.runtime.logs import get_logger
from trafficd.stats.capacity import RATE_READINGS, Reading, WorkerFigures, window_rates, worker_figures
from trafficd.stats.capacity_store import QUERY_FIELD

log = get_logger("capacity")

MAX_BODY_BYTES = 4 * 1024 * 1024  # a metrics page larger than this is refused (vLLM's is ~100 KB)
BACKOFF_CAP_S = 60.0
IDLE_CHECK_S = 5.0  # how often a region without live capacity looks at the policy again

Writer = Callable[[Policy, str, dict[str, WorkerFigures], float], Awaitable[None]]


def metrics_url(worker_url: str, path: str) -> str:
    """`https://host:port/v1` + `/metrics` → `https://host:port/metrics` (the server root, whatever the API path)."""
    parts = urlsplit(worker_url)
    return f"{parts.scheme}://{parts.netloc}{path}"


class CapacityScraper:
    """Scrapes one region's workers for the agent; `run(stop)` until stopped (a task beside the probe rounds)."""

    def __init__(
        self,
        policy: Callable[[], Policy],
        region: str,
        workers: Callable[[], Sequence[WorkerRef]],
        write: Writer,
        clock: Callable[[], float] = time.time,
        backoff_base_s: float = 1.0,
    ) -> None:
        self.policy, self.region, self.workers, self.write, self.clock = policy, region, workers, write, clock
        self.backoff_base_s = backoff_base_s
        self._readings: dict[str, list[Reading]] = {}  # worker → its last RATE_READINGS scrapes (the rate window)
        self._failing: dict[str, str] = {}  # worker → error of the episode in progress
        self._backoff: dict[str, Backoff] = {}
        self._write_failing = False
        self._query_failing = False
        self._session: aiohttp.ClientSession | None = None
        self._tls: tuple[Any, ssl.SSLContext | bool] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                policy = self.policy()
                cfg = policy.capacity_for(self.region) if self.region in policy.regions else None
                if cfg is not None:
                    await self.scrape_once(policy)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), cfg.scrape_every if cfg else IDLE_CHECK_S)
        finally:
            await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def scrape_once(self, policy: Policy) -> dict[str, WorkerFigures]:
        """Scrape every worker due (not backing off), store what was read; returns it."""
        session = self._session_for(policy)
        now_mono = time.monotonic()
        due = [
            w
            for w in self.workers()
            if self._backoff.setdefault(w.name, Backoff(self.backoff_base_s, BACKOFF_CAP_S)).ready(now_mono)
        ]
        results = await asyncio.gather(*(self._scrape(session, policy, w) for w in due))
        figures = {w.name: f for w, f in zip(due, results, strict=True) if f is not None}
        queried = await self._query(session, policy)
        if queried is not None:
            figures[QUERY_FIELD] = queried
        if figures:
            await self._store(policy, figures)
        return figures

    def _session_for(self, policy: Policy) -> aiohttp.ClientSession:
        tls = policy.probe.tls
        if self._session is None or self._tls is None or self._tls[0] != tls:
            if self._session is not None:
                old = self._session
                asyncio.get_running_loop().create_task(old.close())
            ctx: ssl.SSLContext | bool = True
            if not tls.verify:
                ctx = False
            elif tls.ca_file:
                ctx = ssl.create_default_context(cafile=tls.ca_file)
            self._tls = (tls, ctx)
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=16))
        return self._session

    async def _query(self, session: aiohttp.ClientSession, policy: Policy) -> WorkerFigures | None:
        """The region's load from `capacity.load_query` (Prometheus), as figures with no headroom; None on failure
        (logged once per episode as `capacity.query_failed`)."""
        cfg = policy.capacity_for(self.region)
        if cfg is None or cfg.load_query is None:
            return None
        q = cfg.load_query
        try:
            load = await fetch_load(session, q.url, query_text(q.query, self.region), cfg.timeout)
        except (aiohttp.ClientError, OSError, TimeoutError, ssl.SSLError, LoadQueryError, UnicodeDecodeError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
            if not self._query_failing:
                log.warning("capacity.query_failed", region=self.region, url=q.url, error=error)
            self._query_failing = True
            return None
        if self._query_failing:
            self._query_failing = False
            log.info("capacity.query_recovered", region=self.region, url=q.url)
        return WorkerFigures(self.clock(), 0.0, 0.0, None, None, load, None, 0.0)

    async def _scrape(self, session: aiohttp.ClientSession, policy: Policy, w: WorkerRef) -> WorkerFigures | None:
        cfg = policy.capacity_for(self.region, w.name)
        if cfg is None:
            return None
        url = metrics_url(w.url, cfg.metrics_path)
        try:
            text = await self._fetch(session, url, cfg)
            load = parse(text, cfg)
        except (aiohttp.ClientError, OSError, TimeoutError, ssl.SSLError, MetricsError, UnicodeDecodeError) as exc:
            self._failed(w.name, url, exc)
            return None
        self._recovered(w.name, url)
        at = self.clock()
        rate, mean_running, growth = None, None, 0.0
        if load.completed_total is not None:
            reading = Reading(at, load.completed_total, load.running, load.waiting or 0.0)
            self._readings[w.name] = [*self._readings.get(w.name, []), reading][-RATE_READINGS:]
            rate, mean_running, growth = window_rates(self._readings[w.name])
            if rate is None:
                return None  # the counter's first reading: its rate comes with the next scrape
        return worker_figures(
            load.running, load.waiting, load.limit, load.kv_usage, rate, cfg, at, mean_running, growth
        )

    @staticmethod
    async def _fetch(session: aiohttp.ClientSession, url: str, cfg: Capacity) -> str:
        timeout = aiohttp.ClientTimeout(total=cfg.timeout)
        async with session.get(url, timeout=timeout, allow_redirects=False) as resp:
            if resp.status != 200:
                raise MetricsError(f"HTTP {resp.status}")
            body = await resp.content.read(MAX_BODY_BYTES + 1)
            if len(body) > MAX_BODY_BYTES:
                raise MetricsError(f"the metrics page is larger than {MAX_BODY_BYTES} bytes")
            return body.decode("utf-8")

    def _failed(self, worker: str, url: str, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}"[:300]
        wait_s = self._backoff[worker].failed(time.monotonic())
        self._readings.pop(worker, None)  # a rate across the outage could mix two counters' lives
        if worker not in self._failing:
            log.warning(
                "capacity.scrape_failed", region=self.region, worker=worker, url=url, error=error, retry_in_s=wait_s
            )
        else:
            log.debug("capacity.scrape_failed", region=self.region, worker=worker, error=error, retry_in_s=wait_s)
        self._failing[worker] = error

    def _recovered(self, worker: str, url: str) -> None:
        self._backoff[worker].succeeded()
        was = self._failing.pop(worker, None)
        if was is not None:
            log.info("capacity.scrape_recovered", region=self.region, worker=worker, url=url, was=was)

    async def _store(self, policy: Policy, figures: dict[str, WorkerFigures]) -> None:
        try:
            await self.write(policy, self.region, figures, self.clock())
        except Exception as exc:  # the store's own errors (Redis down): the next scrape writes again
            if not self._write_failing:
                log.warning("capacity.write_failed", region=self.region, error=f"{type(exc).__name__}: {exc}"[:300])
            self._write_failing = True
            return
        if self._write_failing:
            self._write_failing = False
            log.info("capacity.write_recovered", region=self.region)


class _AgentLike(Protocol):
    region: str
    current_workers: list[WorkerRef]


def start_for_agent(
    policy: Callable[[], Policy], agent: _AgentLike, client: Any, stop: asyncio.Event
) -> asyncio.Task[None]:
    """Run a scraper for `agent`'s region and workers, writing to Redis through `client`, until `stop`."""
    from trafficd.stats import capacity_store

    async def write(p: Policy, region: str, figures: dict[str, WorkerFigures], now: float) -> None:
        await capacity_store.write(client, p, region, figures, now)

    scraper = CapacityScraper(policy, agent.region, lambda: agent.current_workers, write)
    return asyncio.get_running_loop().create_task(scraper.run(stop))
