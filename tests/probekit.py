"""Scripted OpenAI-compatible workers (real aiohttp servers on loopback) and policy builders for the probe tests.

`ScriptedWorker` serves `POST /{scenario}/v1/chat/completions` (and `/v1/chat/completions` as `ok`); each
scenario is one way a worker can behave (stall, drip, error body, close mid-stream, role-only chunk long before
content, …). It records the requests' headers so tests can check what was sent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import kit
from aiohttp import web
from kit import eventually_async

from trafficd.policy.schema import Deadlines, LoadedPolicy


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    body: dict[str, Any] = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
        **extra,
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


ROLE = chunk({"role": "assistant"})
DONE = b"data: [DONE]\n\n"


def tok(text: str = "hi ") -> bytes:
    return chunk({"content": text})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _sse(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    return resp


async def _script(request: web.Request, parts: list[bytes | float]) -> web.StreamResponse:
    """Write bytes and sleep for floats (seconds), then end the body."""
    resp = await _sse(request)
    for p in parts:
        if isinstance(p, float):
            await asyncio.sleep(p)
        else:
            await resp.write(p)
    await resp.write_eof()
    return resp


class ScriptedWorker:
    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self.bodies: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.arrivals: list[float] = []  # loop time of each request
        self.scenarios_seen: list[str] = []  # scenario of each request
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def scenarios(self) -> dict[str, Handler]:
        async def ok(r: web.Request) -> web.StreamResponse:
            return await _script(r, [ROLE, tok("a"), 0.05, tok("b"), chunk(finish="stop"), DONE])

        async def slow(r: web.Request) -> web.StreamResponse:
            return await _script(r, [ROLE, 0.15, tok("a"), DONE])

        async def role_early(r: web.Request) -> web.StreamResponse:
            return await _script(r, [ROLE, 0.3, tok("a"), chunk(finish="stop"), DONE])

        async def empty_then(r: web.Request) -> web.StreamResponse:
            return await _script(r, [ROLE, chunk({"content": ""}), 0.2, tok("a"), DONE])

        async def reasoning(r: web.Request) -> web.StreamResponse:
            think = chunk({"reasoning_content": "hmm"})
            return await _script(r, [ROLE, think, 0.05, think, 0.05, tok("a"), tok("b"), DONE])

        async def stall(r: web.Request) -> web.StreamResponse:
            return await _script(r, [ROLE, tok("a"), 30.0])

        async def silent(r: web.Request) -> web.StreamResponse:
            return await _script(r, [ROLE, 30.0])

        async def drip(r: web.Request) -> web.StreamResponse:
            return await _script(r, [ROLE, *[x for _ in range(50) for x in (tok("a"), 0.1)], DONE])

        async def close_mid(r: web.Request) -> web.StreamResponse:
            resp = await _sse(r)
            await resp.write(ROLE + tok("a") + tok("b"))
            await asyncio.sleep(0.05)
            assert r.transport is not None
            r.transport.close()
            return resp

        async def no_done(r: web.Request) -> web.StreamResponse:
            return await _script(r, [ROLE, tok("a"), tok("b")])

        async def finish_no_done(r: web.Request) -> web.StreamResponse:
            return await _script(r, [ROLE, tok("a"), chunk(finish="length")])

        async def error_json(r: web.Request) -> web.StreamResponse:
            return web.json_response({"error": {"message": "model overloaded", "code": 503}}, status=200)

        async def error_event(r: web.Request) -> web.StreamResponse:
            err = b'data: {"error": {"message": "boom"}}\n\n'
            return await _script(r, [ROLE, err])

        async def html(r: web.Request) -> web.StreamResponse:
            return web.Response(text="<html>maintenance</html>", content_type="text/html")

        async def html_as_sse(r: web.Request) -> web.StreamResponse:
            return await _script(r, [b"<html>maintenance</html>\n\n"])

        async def bad_json(r: web.Request) -> web.StreamResponse:
            return await _script(r, [ROLE, b"data: {not json\n\n", DONE])

        async def long_line(r: web.Request) -> web.StreamResponse:
            return await _script(r, [ROLE, b"data: " + b"x" * 200_000 + b"\n\n", DONE])

        async def messy(r: web.Request) -> web.StreamResponse:
            usage = b'data: {"id":"c1","choices":[],"usage":{"completion_tokens":2}}\r\n\r\n'
            multi = b'data: {"choices":[{"index":0,\r\ndata: "delta":{"content":"b"}}]}\r\n\r\n'
            return await _script(
                r,
                [
                    b": keep-alive\r\n\r\n",
                    b"\r\n",
                    ROLE.replace(b"\n", b"\r\n"),
                    b": ping\r\n",
                    tok("a")[:20],  # a chunk split mid-line
                    0.01,
                    tok("a")[20:],
                    multi,
                    chunk(finish="stop"),
                    usage,
                    b"data: [DONE]\r\n\r\n",
                ],
            )

        async def redirect(r: web.Request) -> web.StreamResponse:
            raise web.HTTPTemporaryRedirect(location=f"{self.url}/moved/v1/chat/completions")

        async def echo_request(r: web.Request) -> web.StreamResponse:
            """A 400 whose message quotes the key it got and the prompt (as some servers' errors do)."""
            body = await r.json()
            got = r.headers.get("Authorization", "")
            message = f"bad request: key {got!r}, prompt {body['messages'][0]['content']!r}; " + "y" * 400
            return web.json_response({"error": {"message": message}}, status=400)

        def status(code: int) -> Handler:
            async def h(r: web.Request) -> web.StreamResponse:
                return web.json_response({"error": {"message": f"status {code}"}}, status=code)

            return h

        return {
            "ok": ok,
            "slow": slow,
            "role_early": role_early,
            "empty_then": empty_then,
            "reasoning": reasoning,
            "stall": stall,
            "silent": silent,
            "drip": drip,
            "close_mid": close_mid,
            "no_done": no_done,
            "finish_no_done": finish_no_done,
            "error_json": error_json,
            "error_event": error_event,
            "html": html,
            "html_as_sse": html_as_sse,
            "bad_json": bad_json,
            "long_line": long_line,
            "messy": messy,
            "redirect": redirect,
            "echo_request": echo_request,
            "s429": status(429),
            "s404": status(404),
            "s503": status(503),
        }

    def app(self) -> web.Application:
        app = web.Application()
        handlers = self.scenarios()

        async def dispatch(request: web.Request) -> web.StreamResponse:
            self.arrivals.append(asyncio.get_running_loop().time())
            scenario = request.match_info.get("scenario", "ok")
            self.scenarios_seen.append(scenario)
            self.headers.append(dict(request.headers))
            self.bodies.append(await request.json())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                return await handlers[scenario](request)
            finally:
                self.in_flight -= 1

        app.router.add_post("/{scenario}/v1/chat/completions", dispatch)
        app.router.add_post("/v1/chat/completions", dispatch)  # the base URL behaves like /ok
        return app

    async def start(self, ssl_context: Any = None, host: str = "127.0.0.1") -> ScriptedWorker:
        self.runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, 0, ssl_context=ssl_context)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def deadlines(**kw: str) -> Deadlines:
    """Deadlines from duration strings: deadlines(first_token='200ms')."""
    return Deadlines.model_validate(kw)


def make_policy(
    workers: list[dict[str, Any]] | None = None,
    *,
    region: str = "r1",
    probe: dict[str, Any] | None = None,
    models: list[str | dict[str, Any]] | None = None,
    discovery: dict[str, Any] | None = None,
    slo: dict[str, Any] | None = None,
    redis: dict[str, Any] | None = None,
) -> LoadedPolicy:
    region_cfg: dict[str, Any] = {"dns": {"endpoint": f"{region}.lb.example.com", "aws_region": "us-east-1"}}
    if workers is not None:
        region_cfg["workers"] = workers
    if discovery is not None:
        region_cfg["discovery"] = discovery
    data = kit.policy_doc(
        {region: region_cfg},
        probe=probe or {},
        models=[m if isinstance(m, dict) else {"name": m} for m in (models or ["m1"])],
        redis=redis,
    )
    if slo:
        data["slo"] = slo
    return kit.as_loaded(data)


class FakeSink:
    """An in-memory SampleSink (the store contract: write, heartbeat) that tests can wait on."""

    def __init__(self) -> None:
        self.samples: list[Any] = []
        self.heartbeats: list[tuple[str, str]] = []
        self.fail_writes = 0  # raise on this many next writes

    async def write(self, samples: Any) -> None:
        if self.fail_writes:
            self.fail_writes -= 1
            raise ConnectionError("redis is down")
        self.samples.extend(samples)

    async def heartbeat(self, agent_id: str, region: str) -> None:
        self.heartbeats.append((agent_id, region))


async def wait_until(cond: Callable[[], object], timeout_s: float = 10.0, what: str = "condition") -> None:
    """Poll `cond` until it returns something truthy; fail the test after `timeout_s`."""
    await eventually_async(cond, what, timeout_s=timeout_s, interval_s=0.01)
