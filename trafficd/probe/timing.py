"""The state of one probe attempt: connection tracing (aiohttp `TraceConfig`), timestamps, counts and deadlines.

`Run.rearm()` points the probe's single `asyncio.timeout` at the nearest deadline still applicable and remembers
which one it is (its reason code); `Run.event()` records one streamed event (answer or reasoning text).
TTFT ends at the first answer token, or at the first reasoning token when the policy says so (`ttft_from`).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, Protocol

import aiohttp

from trafficd.model import Sample
from trafficd.policy.schema import Deadlines


class Conn:
    """Per-probe trace context (passed as aiohttp's trace_request_ctx)."""

    __slots__ = ("create_end", "create_start", "on_ready", "ready", "reused")

    def __init__(self, on_ready: Any) -> None:
        self.create_start: float | None = None
        self.create_end: float | None = None
        self.reused = False
        self.ready = False
        self.on_ready = on_ready


def _ctx(params_ctx: SimpleNamespace) -> Conn | None:
    c = getattr(params_ctx, "trace_request_ctx", None)
    return c if isinstance(c, Conn) else None


async def _on_create_start(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
    if (c := _ctx(ctx)) is not None:
        c.create_start = asyncio.get_running_loop().time()


async def _on_create_end(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
    if (c := _ctx(ctx)) is not None:
        c.create_end = asyncio.get_running_loop().time()
        c.ready = True
        c.on_ready()


async def _on_reuse(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
    if (c := _ctx(ctx)) is not None:
        c.reused = True
        c.ready = True
        c.on_ready()


def trace_config() -> aiohttp.TraceConfig:
    tc = aiohttp.TraceConfig()
    tc.on_connection_create_start.append(_on_create_start)
    tc.on_connection_create_end.append(_on_create_end)
    tc.on_connection_reuseconn.append(_on_reuse)
    return tc


class Run:
    """The state of one probe attempt: timestamps, counts, and the deadline currently armed."""

    def __init__(self, d: Deadlines, t0: float, *, ttft_from_reasoning: bool = False) -> None:
        self.d = d
        self.t0 = t0
        self.ttft_from_reasoning = ttft_from_reasoning
        self.cm: asyncio.Timeout | None = None
        self.conn: Conn | None = None
        self.status: int | None = None
        self.ttft: float | None = None
        self.started: float | None = None  # first token (content or reasoning)
        self.last_event: float | None = None
        self.max_gap = 0.0
        self.tokens = 0
        self.reasoning = 0
        self.finished_at: float | None = None
        self.done_at: float | None = None
        self.armed_reason = "total_timeout"
        self.armed_at = t0 + d.total

    def rearm(self) -> None:
        """Point the timeout at the nearest deadline still applicable, remembering which one it is."""
        d, t0 = self.d, self.t0
        at, reason = t0 + d.total, "total_timeout"
        if (self.conn is None or not self.conn.ready) and t0 + d.connect < at:
            at, reason = t0 + d.connect, "connect_error"
        if self.ttft is None and t0 + d.first_token < at:
            at, reason = t0 + d.first_token, "ttft_timeout"
        if self.last_event is not None and self.last_event + d.gap < at:
            at, reason = self.last_event + d.gap, "stall_timeout"
        self.armed_at, self.armed_reason = at, reason
        if self.cm is not None:
            self.cm.reschedule(at)

    def event(self, now: float, content: bool, reasoning: bool) -> None:
        if self.started is None and (content or reasoning):
            self.started = now
        elif self.started is not None and self.last_event is not None:
            self.max_gap = max(self.max_gap, now - self.last_event)
        if self.started is not None:
            self.last_event = now
        if content:
            self.tokens += 1
        if reasoning:
            self.reasoning += 1
        if self.ttft is None and (content or (reasoning and self.ttft_from_reasoning)):
            self.ttft = now - self.t0


class _Series(Protocol):
    @property
    def region(self) -> str: ...
    @property
    def worker(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def deadlines(self) -> Deadlines: ...


def sample_of(target: _Series, run: Run, t_wall: float, now: float, reason: str | None, deadline_hit: bool) -> Sample:
    """The Sample of a finished probe; after a deadline the latency (and the phase that hit it) is the deadline."""
    d = target.deadlines
    ms = 1000.0
    ttft = None if run.ttft is None else run.ttft * ms
    max_gap = run.max_gap * ms if run.started is not None else None
    connect = None
    conn = run.conn
    if conn is not None and conn.create_start is not None and conn.create_end is not None:
        connect = (conn.create_end - conn.create_start) * ms
    if reason is None or reason == "empty_answer":
        end = run.done_at if run.done_at is not None else run.finished_at
        total = ((end if end is not None else now) - run.t0) * ms
    else:
        total = (now - run.t0) * ms
    if deadline_hit:  # the latency is the deadline, never less
        total = max(total, (run.armed_at - run.t0) * ms)
        if reason == "connect_error":
            connect = d.connect * ms
        elif reason == "ttft_timeout":
            ttft = d.first_token * ms
        elif reason == "stall_timeout":
            max_gap = d.gap * ms
    return Sample(
        region=target.region,
        worker=target.worker,
        model=target.model,
        t=t_wall,
        ok=reason is None,
        reason=reason,
        total_ms=total,
        ttft_ms=ttft,
        max_gap_ms=max_gap,
        tokens=run.tokens,
        reasoning_tokens=run.reasoning,
        connect_ms=connect,
        status=run.status,
    )
