"""The streaming probe: one OpenAI-compatible `POST /v1/chat/completions` with `stream: true` → one `Sample`.

Timing (all on the event loop's monotonic clock, t0 taken before the request is sent):
- `ttft_ms`: t0 → arrival of the first chunk with a non-empty `delta.content` (role-only, empty and
  `reasoning_content` chunks don't count; reasoning chunks are counted apart in `reasoning_tokens`);
- `total_ms`: t0 → `data: [DONE]`, or → the chunk with `finish_reason` when the stream then ends without `[DONE]`;
- `max_gap_ms`: the largest interval between consecutive events from the first token (content or reasoning) on;
- `connect_ms`: DNS + TCP + TLS of a new connection (aiohttp TraceConfig, a fresh context per probe), None when a
  pooled connection was reused.

Deadlines (`policy.deadlines_for(region, model)`): connect (until a connection is ready), first token (until the
first content chunk), gap (between events once tokens flow), total. One `asyncio.timeout` is rescheduled to the
nearest one as the stream advances. A probe that hits one is a failed Sample (`connect_error`, `ttft_timeout`,
`stall_timeout`, `total_timeout`) whose latency is the deadline: its `total_ms` is never below the deadline, so a
probe that ran past the SLO threshold is always counted over it. A worker's failure is a Sample, never an exception.
A request on a reused connection that the server had already closed is retried once on a new one (same t0).

`Target.address`: connect to that IP while TLS verifies the certificate for the URL's host name (SNI and `Host`
carry the name). `trafficd probe URL --model M` runs probes by hand (see `probe_cli.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp
import yarl

from trafficd.model import Sample
from trafficd.policy.schema import Deadlines, Probe
from trafficd.probe.credentials import Secret, auth_headers
from trafficd.probe.sse import SseError, SseLineTooLong, SseParser, body_has_error, interpret

COMPLETIONS_PATH = "/v1/chat/completions"


class ProbeConfigError(Exception):
    """The prober cannot be set up (e.g. the CA file cannot be read): a configuration error, not a sample."""


@dataclass(frozen=True, slots=True)
class Target:
    """One series to probe: a worker (base URL, optional IP to connect to) and one model."""

    region: str
    worker: str
    model: str
    url: str  # base URL ({url}/v1/chat/completions) or the full .../chat/completions URL
    address: str | None = None  # connect here; TLS still verifies the URL's host name
    deadlines: Deadlines = field(default_factory=Deadlines)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    sample: Sample
    detail: str = ""  # why it failed, for humans (`trafficd probe`, logs); never carries the API key


class _Conn:
    """Per-probe trace context (passed as aiohttp's trace_request_ctx)."""

    __slots__ = ("create_end", "create_start", "on_ready", "ready", "reused")

    def __init__(self, on_ready: Any) -> None:
        self.create_start: float | None = None
        self.create_end: float | None = None
        self.reused = False
        self.ready = False
        self.on_ready = on_ready


def _ctx(params_ctx: SimpleNamespace) -> _Conn | None:
    c = getattr(params_ctx, "trace_request_ctx", None)
    return c if isinstance(c, _Conn) else None


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


def _trace_config() -> aiohttp.TraceConfig:
    tc = aiohttp.TraceConfig()
    tc.on_connection_create_start.append(_on_create_start)
    tc.on_connection_create_end.append(_on_create_end)
    tc.on_connection_reuseconn.append(_on_reuse)
    return tc


class _Failed(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class _Run:
    """The state of one probe attempt: timestamps, counts, and the deadline currently armed."""

    def __init__(self, d: Deadlines, t0: float) -> None:
        self.d = d
        self.t0 = t0
        self.cm: asyncio.Timeout | None = None
        self.conn: _Conn | None = None
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
            if self.ttft is None:
                self.ttft = now - self.t0
        if reasoning:
            self.reasoning += 1


def _reason_for_status(status: int) -> str:
    if status == 429:
        return "http_429"
    if status >= 500:
        return "http_5xx"
    return "http_4xx"  # 4xx, and 1xx/3xx: the request as configured cannot be served


class Prober:
    """Probes targets over one aiohttp session (connections reused). Use as an async context manager."""

    def __init__(self, cfg: Probe | None = None, *, secret: Secret | None = None) -> None:
        self.cfg = cfg or Probe()
        self._secret = secret
        self._headers = {"Content-Type": "application/json", **auth_headers(self.cfg.auth, secret)}
        self._bodies: dict[str, bytes] = {}
        self._urls: dict[tuple[str, str | None], tuple[yarl.URL, str | None, str | None]] = {}
        self._ssl: ssl.SSLContext | bool = self._ssl_context()
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"Prober(concurrency={self.cfg.concurrency}, auth={'yes' if self._secret else 'no'})"

    def _ssl_context(self) -> ssl.SSLContext | bool:
        if not self.cfg.tls.verify:
            return False
        try:
            return ssl.create_default_context(cafile=self.cfg.tls.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ProbeConfigError(f"cannot load probe.tls.ca_file {self.cfg.tls.ca_file}: {exc}") from None

    async def __aenter__(self) -> Prober:
        connector = aiohttp.TCPConnector(limit=self.cfg.concurrency, limit_per_host=0, ssl=self._ssl)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_read=None, sock_connect=None),
            trace_configs=[_trace_config()],
            read_bufsize=self.cfg.read_buffer_bytes,
            auto_decompress=True,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _body(self, model: str) -> bytes:
        body = self._bodies.get(model)
        if body is None:
            payload = {
                "model": model,
                "messages": [{"role": "user", "content": self.cfg.prompt}],
                "max_tokens": self.cfg.max_tokens,
                "temperature": 0,
                "stream": True,
            }
            body = self._bodies[model] = json.dumps(payload).encode()
        return body

    def _request_url(self, target: Target) -> tuple[yarl.URL, str | None, str | None]:
        """(URL to request, Host header, TLS server name); cached per (url, address)."""
        key = (target.url, target.address)
        hit = self._urls.get(key)
        if hit is not None:
            return hit
        url = yarl.URL(target.url)
        if not url.path.rstrip("/").endswith("/chat/completions"):
            url = url.with_path(url.path.rstrip("/") + COMPLETIONS_PATH)
        host_header = server_name = None
        if target.address and url.host:
            host_header = url.host if url.explicit_port is None else f"{url.host}:{url.port}"
            server_name = url.host if url.scheme == "https" else None
            url = url.with_host(target.address)
        self._urls[key] = (url, host_header, server_name)
        return self._urls[key]

    async def probe(self, target: Target) -> Sample:
        """One probe of one target; a worker's failure is a failed Sample, never an exception."""
        return (await self.probe_detailed(target)).sample

    async def probe_detailed(self, target: Target) -> ProbeResult:
        if self._session is None:
            raise RuntimeError("use `async with Prober(...)` before probing")
        loop = asyncio.get_running_loop()
        t_wall = time.time()
        run = _Run(target.deadlines, loop.time())
        try:
            parts = self._request_url(target)
        except ValueError as exc:  # an unusable URL or address: nothing is sent
            return self._failure(target, run, t_wall, "connect_error", self._describe(exc))
        for attempt in (1, 2):
            cm = asyncio.timeout(None)
            try:
                async with cm:
                    run.cm = cm
                    run.conn = _Conn(run.rearm)
                    run.rearm()
                    await self._exchange(target, parts, run)
            except TimeoutError:
                if run.done_at is not None:  # finished; only the tidy-up ran out of time
                    break
                if not cm.expired():
                    return self._failure(target, run, t_wall, "connect_error", "timed out")
                now = loop.time()
                detail = f"{run.armed_reason} after {(now - run.t0) * 1000:.0f} ms"
                return self._result(target, run, t_wall, now, run.armed_reason, detail, deadline_hit=True)
            except _Failed as exc:
                return self._failure(target, run, t_wall, exc.reason, exc.detail)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                if attempt == 1 and run.status is None and run.conn is not None and run.conn.reused:
                    continue  # the server had closed the pooled connection: one retry on a fresh one
                return self._failure(target, run, t_wall, self._classify(exc, run), self._describe(exc))
            except (aiohttp.ClientError, ssl.SSLError, ssl.CertificateError, OSError) as exc:
                return self._failure(target, run, t_wall, self._classify(exc, run), self._describe(exc))
            break
        return self._result(target, run, t_wall, loop.time(), None, "")

    def _failure(self, target: Target, run: _Run, t_wall: float, reason: str, detail: str) -> ProbeResult:
        now = asyncio.get_running_loop().time()
        if reason == "no_done" and run.finished_at is not None:
            return self._result(target, run, t_wall, now, None, "")  # closed uncleanly after the last chunk
        return self._result(target, run, t_wall, now, reason, self._redact(detail))

    @staticmethod
    def _classify(exc: BaseException, run: _Run) -> str:
        tls = aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError | ssl.SSLError | ssl.CertificateError
        if isinstance(exc, tls):
            return "tls_error"
        if isinstance(exc, aiohttp.ClientConnectorError):
            return "connect_error"
        if isinstance(exc, aiohttp.ClientPayloadError):
            return "no_done"
        if isinstance(exc, aiohttp.ClientResponseError):  # unparsable status line or headers
            return "malformed_stream"
        return "no_done" if run.status is not None else "connect_error"

    def _describe(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return self._redact(text)[:300]

    def _redact(self, text: str) -> str:
        return self._secret.redact(text) if self._secret is not None else text

    async def _exchange(self, target: Target, parts: tuple[yarl.URL, str | None, str | None], run: _Run) -> None:
        assert self._session is not None
        url, host_header, server_name = parts
        headers = self._headers if host_header is None else {**self._headers, "Host": host_header}
        async with self._session.post(
            url,
            data=self._body(target.model),
            headers=headers,
            server_hostname=server_name,
            trace_request_ctx=run.conn,
            allow_redirects=False,
        ) as resp:
            run.status = resp.status
            if run.conn is not None and not run.conn.ready:  # headers prove a connection, traced or not
                run.conn.ready = True
                run.rearm()
            if not 200 <= resp.status < 300:
                raise _Failed(_reason_for_status(resp.status), f"HTTP {resp.status}")
            if resp.content_type != "text/event-stream":
                await self._non_stream(resp)
            await self._stream(resp, run)

    async def _non_stream(self, resp: aiohttp.ClientResponse) -> None:
        """A 2xx that is not an event stream: an error JSON (`error_body`) or something else (`malformed_stream`)."""
        limit = self.cfg.read_buffer_bytes
        body = b""
        while len(body) <= limit:
            data = await resp.content.readany()
            if not data:
                break
            body += data
        if body_has_error(body[:limit]):
            raise _Failed("error_body", f"HTTP {resp.status} with an error object")
        raise _Failed("malformed_stream", f"not an event stream (Content-Type {resp.content_type})")

    async def _stream(self, resp: aiohttp.ClientResponse, run: _Run) -> None:
        loop = asyncio.get_running_loop()
        parser = SseParser(self.cfg.read_buffer_bytes)
        content = resp.content
        while True:
            data = await content.readany()
            now = loop.time()
            try:
                events = parser.feed(data) if data else parser.close()
                for ev in events:
                    chunk = interpret(ev)
                    if chunk.error:
                        raise _Failed("error_body", "the stream carried an error object")
                    if chunk.done:
                        run.done_at = now
                        break
                    run.event(now, chunk.content, chunk.reasoning)
                    if chunk.finished and run.finished_at is None:
                        run.finished_at = now
            except SseLineTooLong as exc:
                raise _Failed("malformed_stream", str(exc)) from None
            except SseError as exc:
                raise _Failed("malformed_stream", str(exc)) from None
            if run.done_at is not None:
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    await self._drain(resp, run)
                return
            if not data:
                if run.finished_at is not None:
                    return
                raise _Failed("no_done", "the stream ended without [DONE] or a finish_reason")
            if events:
                run.rearm()

    @staticmethod
    async def _drain(resp: aiohttp.ClientResponse, run: _Run) -> None:
        """Read the end of the body after [DONE] (briefly) so that the connection can be reused."""
        if run.cm is not None:
            run.cm.reschedule(asyncio.get_running_loop().time() + 0.5)
        while not resp.content.at_eof():
            if not await resp.content.readany():
                break

    def _result(
        self,
        target: Target,
        run: _Run,
        t_wall: float,
        now: float,
        reason: str | None,
        detail: str,
        *,
        deadline_hit: bool = False,
    ) -> ProbeResult:
        d = target.deadlines
        ms = 1000.0
        elapsed = now - run.t0
        ttft = None if run.ttft is None else run.ttft * ms
        max_gap = run.max_gap * ms if run.started is not None else None
        connect = None
        conn = run.conn
        if conn is not None and conn.create_start is not None and conn.create_end is not None:
            connect = (conn.create_end - conn.create_start) * ms
        if reason is None:
            end = run.done_at if run.done_at is not None else run.finished_at
            total = ((end if end is not None else now) - run.t0) * ms
        else:
            total = elapsed * ms
            if deadline_hit:  # the latency is the deadline, never less
                total = max(total, (run.armed_at - run.t0) * ms)
                if reason == "connect_error":
                    connect = d.connect * ms
                elif reason == "ttft_timeout":
                    ttft = d.first_token * ms
                elif reason == "stall_timeout":
                    max_gap = d.gap * ms
        sample = Sample(
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
        return ProbeResult(sample=sample, detail=detail)
