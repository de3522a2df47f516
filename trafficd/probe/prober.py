"""The streaming probe: one streaming request in the worker's API (`trafficd/probe/apis/`) → one `Sample`.

Timing (all on the event loop's monotonic clock, t0 taken before the request is sent):
- `ttft_ms`: t0 → arrival of the first event with answer text (role-only, empty and reasoning events don't
  count; reasoning is counted apart in `reasoning_tokens`), or with reasoning text when the model's
  `ttft_from: reasoning`;
- `total_ms`: t0 → the API's terminal event (`[DONE]`, `message_stop`, `response.completed`, …), or → the event
  with a finish reason when the stream then ends without it;
- `max_gap_ms`: the largest interval between consecutive events from the first token (answer or reasoning) on;
- `connect_ms`: DNS + TCP + TLS of a new connection (aiohttp TraceConfig, a fresh context per probe), None when a
  pooled connection was reused.

Deadlines (`policy.deadlines_for(region, model)`): connect, first token, gap, total; one `asyncio.timeout` is
rescheduled to the nearest one (`timing.Run`). A probe that hits one is a failed Sample whose latency is the
deadline. A complete answer without answer text is `empty_answer` unless the model may answer empty. A worker's
failure is a Sample, never an exception; its detail names the URL requested (a redirect's target too, never
followed) and carries the server's error message (≤ 200 characters, key and prompt removed: `scrub.py`).
A request on a reused connection that the server had already closed is retried once on a new one (same t0).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import ssl
import time
from collections.abc import Callable

import aiohttp

from trafficd.model import Sample
from trafficd.policy.schema import Ask, Probe
from trafficd.probe.apis import Chunk, Dialect, dialect
from trafficd.probe.apis.base import error_text
from trafficd.probe.credentials import Secret, auth_headers
from trafficd.probe.prompts import prompt_text
from trafficd.probe.responses import Failed, empty_detail, read_some, reason_for_status, status_detail
from trafficd.probe.scrub import MESSAGE_CHARS, scrub, server_message
from trafficd.probe.sse import NdjsonParser, SseError, SseParser
from trafficd.probe.target import ProbeConfigError, ProbeResult, Target, series_target
from trafficd.probe.timing import Conn, Run, sample_of, trace_config
from trafficd.probe.urls import Endpoint, endpoint

__all__ = ["ProbeConfigError", "ProbeResult", "Prober", "Target", "read_some", "series_target", "status_detail"]


class _Probe:
    """One probe in flight: its target, settings, timing state, and the request as sent."""

    def __init__(self, target: Target, ask: Ask, d: Dialect, t0: float, prompt: str) -> None:
        self.target = target
        self.ask = ask
        self.dialect = d
        self.run = Run(target.deadlines, t0, ttft_from_reasoning=ask.ttft_from == "reasoning")
        self.t_wall = time.time()
        self.prompt = prompt
        self.shown = target.url


class Prober:
    """Probes targets over one aiohttp session (connections reused). Use as an async context manager."""

    def __init__(self, cfg: Probe | None = None, *, secret: Secret | None = None) -> None:
        self.cfg = cfg or Probe()
        self._secret = secret
        self._default_ask = Ask.resolve(self.cfg, None)
        self._headers: dict[str, dict[str, str]] = {}
        self._bodies: dict[tuple[str, str, int], bytes] = {}
        self._urls: dict[tuple[str, str | None, str, bool], Endpoint | None] = {}
        self._nonce = itertools.count(int(time.time() * 1000) % 1_000_000)
        self._ssl: ssl.SSLContext | bool = self._ssl_context()
        self._session: aiohttp.ClientSession | None = None

    @property
    def secret(self) -> Secret | None:
        return self._secret

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
        connector = aiohttp.TCPConnector(limit=self.cfg.max_in_flight, limit_per_host=0, ssl=self._ssl)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_read=None, sock_connect=None),
            trace_configs=[trace_config()],
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

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use `async with Prober(...)` before probing")
        return self._session

    # ---------------------------------------------------------------- the request

    def headers(self, d: Dialect, host_header: str | None = None) -> dict[str, str]:
        """Content type, the API's own headers and the key in the API's (or the policy's) auth header."""
        h = self._headers.get(d.name)
        if h is None:
            h = {"Content-Type": "application/json", **d.headers, **auth_headers(self.cfg.auth, self._secret, d.auth)}
            self._headers[d.name] = h
        return h if host_header is None else {**h, "Host": host_header}

    def endpoint(self, url: str, address: str | None, d: Dialect, *, models: bool = False) -> Endpoint | None:
        """The endpoint of a worker for this API (cached); raises ValueError for an unusable URL."""
        key = (url, address, d.name, models)
        if key not in self._urls:
            self._urls[key] = endpoint(url, address, d, models=models)
        return self._urls[key]

    def _prompt(self, ask: Ask) -> str:
        return prompt_text(self.cfg.prompt, ask.prompt_tokens, next(self._nonce))

    def _body(self, p: _Probe) -> bytes:
        if p.ask.prompt_tokens:  # a padded prompt differs on every probe
            return json.dumps(p.dialect.body(p.target.model, p.prompt, p.ask.max_tokens)).encode()
        key = (p.dialect.name, p.target.model, p.ask.max_tokens)
        body = self._bodies.get(key)
        if body is None:
            body = json.dumps(p.dialect.body(p.target.model, p.prompt, p.ask.max_tokens)).encode()
            self._bodies[key] = body
        return body

    # ---------------------------------------------------------------- one probe

    async def probe(self, target: Target) -> Sample:
        """One probe of one target; a worker's failure is a failed Sample, never an exception."""
        return (await self.probe_detailed(target)).sample

    async def probe_detailed(self, target: Target, on_start: Callable[[Run, float], None] | None = None) -> ProbeResult:
        """One probe with its detail; `on_start(run, t_wall)` sees the probe's timing state from its t0 on (the
        agent's SLO-threshold timers, probe/crossing.py)."""
        session = self.session
        ask = target.ask or self._default_ask
        d = dialect(ask.api)
        p = _Probe(target, ask, d, asyncio.get_running_loop().time(), self._prompt(ask))
        if on_start is not None:
            on_start(p.run, p.t_wall)
        try:
            ep = self.endpoint(target.url, target.address, d)
        except ValueError as exc:  # an unusable URL or address: nothing is sent
            return self._failure(p, "connect_error", self.describe(exc))
        assert ep is not None
        p.shown = ep.shown
        outcome = await self._attempt(session, p, ep, retry=True)
        if outcome is _RETRY:  # the server had closed the pooled connection: once more on a fresh one
            outcome = await self._attempt(session, p, ep, retry=False)
        return outcome if isinstance(outcome, ProbeResult) else self._complete(p)

    async def _attempt(self, session: aiohttp.ClientSession, p: _Probe, ep: Endpoint, *, retry: bool) -> object:
        """One attempt: a ProbeResult when it failed, `_RETRY`, or None when the stream completed."""
        run = p.run
        cm = asyncio.timeout(None)
        try:
            async with cm:
                run.cm = cm
                run.conn = Conn(run.rearm)
                run.rearm()
                await self._exchange(session, p, ep)
        except TimeoutError:
            if run.done_at is not None:  # finished; only the tidy-up ran out of time
                return None
            if not cm.expired():
                return self._failure(p, "connect_error", "timed out")
            return self._deadline(p)
        except Failed as exc:
            return self._failure(p, exc.reason, exc.detail, exc.message)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            if retry and run.status is None and run.conn is not None and run.conn.reused:
                return _RETRY
            return self._failure(p, self._classify(exc, run), self.describe(exc))
        except (aiohttp.ClientError, ssl.SSLError, ssl.CertificateError, OSError) as exc:
            return self._failure(p, self._classify(exc, run), self.describe(exc))
        return None

    async def _exchange(self, session: aiohttp.ClientSession, p: _Probe, ep: Endpoint) -> None:
        run = p.run
        async with session.post(
            ep.url,
            data=self._body(p),
            headers=self.headers(p.dialect, ep.host_header),
            server_hostname=ep.server_name,
            trace_request_ctx=run.conn,
            allow_redirects=False,
        ) as resp:
            run.status = resp.status
            if run.conn is not None and not run.conn.ready:  # headers prove a connection, traced or not
                run.conn.ready = True
                run.rearm()
            if not 200 <= resp.status < 300:
                message = server_message(await read_some(resp), self._secret, p.prompt)
                raise Failed(reason_for_status(resp.status), status_detail(resp, message), message)
            if p.dialect.framing == "sse" and resp.content_type != "text/event-stream":
                await self._non_stream(resp, p)
            await self._stream(resp, p)

    async def _non_stream(self, resp: aiohttp.ClientResponse, p: _Probe) -> None:
        """A 2xx that is not an event stream: an error JSON (`error_body`) or something else (`malformed_stream`)."""
        body = await read_some(resp)
        try:
            is_error = error_text(json.loads(body.decode("utf-8", errors="replace"))) is not None
        except ValueError:
            is_error = False
        if is_error:
            message = server_message(body, self._secret, p.prompt)
            raise Failed("error_body", f"HTTP {resp.status} with an error object: {message}", message)
        raise Failed("malformed_stream", f"not an event stream (Content-Type {resp.content_type})")

    async def _stream(self, resp: aiohttp.ClientResponse, p: _Probe) -> None:
        loop = asyncio.get_running_loop()
        run, d = p.run, p.dialect
        parser = (
            SseParser(self.cfg.read_buffer_bytes) if d.framing == "sse" else NdjsonParser(self.cfg.read_buffer_bytes)
        )
        content = resp.content
        while True:
            data = await content.readany()
            now = loop.time()
            try:
                events = parser.feed(data) if data else parser.close()
                for ev in events:
                    if self._on_event(p, d.interpret(ev), now):
                        break
            except SseError as exc:
                raise Failed("malformed_stream", str(exc)) from None
            if run.done_at is not None:
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    await self._drain(resp, run)
                return
            if not data:
                if run.finished_at is not None:
                    return
                raise Failed("no_done", f"the stream ended without {d.terminal} or a finish reason")
            if events:
                run.rearm()

    def _on_event(self, p: _Probe, chunk: Chunk, now: float) -> bool:
        """Record one event; True when it ends the stream. An error event fails the probe with its message."""
        run = p.run
        if chunk.error is not None:
            message = scrub(chunk.error, self._secret, p.prompt)[:MESSAGE_CHARS]
            raise Failed(
                "error_body",
                f"the stream carried an error: {message}" if message else "the stream carried an error",
                message,
            )
        if not chunk.keepalive and (chunk.content or chunk.reasoning or not chunk.done):
            run.event(now, chunk.content, chunk.reasoning)
        if chunk.finished and run.finished_at is None:
            run.finished_at = now
        if chunk.done:
            run.done_at = now
        return chunk.done

    @staticmethod
    async def _drain(resp: aiohttp.ClientResponse, run: Run) -> None:
        """Read the end of the body after the terminal event (briefly) so that the connection can be reused."""
        if run.cm is not None:
            run.cm.reschedule(asyncio.get_running_loop().time() + 0.5)
        while not resp.content.at_eof():
            if not await resp.content.readany():
                break

    # ---------------------------------------------------------------- outcomes

    def _complete(self, p: _Probe) -> ProbeResult:
        """The stream ended well: ok, or `empty_answer` when it carried no answer text and that is not allowed."""
        if p.run.tokens == 0 and not p.ask.allow_empty:
            return self._result(p, "empty_answer", empty_detail(p.run, p.ask))
        return self._result(p, None, "")

    def _failure(self, p: _Probe, reason: str, detail: str, message: str = "") -> ProbeResult:
        if reason == "no_done" and p.run.finished_at is not None:
            return self._complete(p)  # closed uncleanly after the last chunk
        return self._result(p, reason, self._redact(detail), message)

    def _deadline(self, p: _Probe) -> ProbeResult:
        run = p.run
        detail = f"{run.armed_reason} after {(asyncio.get_running_loop().time() - run.t0) * 1000:.0f} ms"
        return self._result(p, run.armed_reason, detail, deadline_hit=True)

    @staticmethod
    def _classify(exc: BaseException, run: Run) -> str:
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

    def describe(self, exc: BaseException) -> str:
        """An exception as a detail, the key redacted."""
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return self._redact(text)[:300]

    def _redact(self, text: str) -> str:
        return self._secret.redact(text) if self._secret is not None else text

    def _result(
        self, p: _Probe, reason: str | None, detail: str, message: str = "", *, deadline_hit: bool = False
    ) -> ProbeResult:
        now = asyncio.get_running_loop().time()
        if reason is not None:
            detail = f"{detail} (POST {p.shown})"
        return ProbeResult(sample_of(p.target, p.run, p.t_wall, now, reason, deadline_hit), detail, p.shown, message)


_RETRY = object()
