"""A fake OpenAI-compatible streaming inference worker (aiohttp, SSE) for the demo and the tests.

`POST /v1/chat/completions` with `stream: true` answers with a role-only chunk, then `tokens` content chunks
paced `token_ms` apart after a first-token delay of `ttft_ms`, a final chunk with `finish_reason`, and
`data: [DONE]`. `POST /control` with a JSON body changes the behaviour at run time (the demo makes a region
slow this way); `GET /control` shows it. Prompts are not logged.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web


@dataclass
class Behaviour:
    ttft_ms: float = 120.0  # delay before the first content token
    token_ms: float = 20.0  # pace between tokens
    tokens: int = 8
    jitter: float = 0.1  # ± share of random variation on every delay
    error_rate: float = 0.0  # share of requests answered with HTTP 500


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def make_app(behaviour: Behaviour | None = None, name: str = "fake") -> web.Application:
    state = {"b": behaviour or Behaviour(), "requests": 0}

    def vary(ms: float) -> float:
        b: Behaviour = state["b"]  # type: ignore[assignment]
        return max(0.0, ms * (1.0 + random.uniform(-b.jitter, b.jitter))) / 1000.0

    async def completions(request: web.Request) -> web.StreamResponse:
        state["requests"] = int(state["requests"]) + 1  # type: ignore[call-overload]
        b: Behaviour = state["b"]  # type: ignore[assignment]
        payload = await request.json()
        model = str(payload.get("model", "fake-model"))
        if b.error_rate and random.random() < b.error_rate:
            return web.json_response({"error": {"message": "injected failure"}}, status=500)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        await resp.write(_chunk(model, {"role": "assistant"}))
        await asyncio.sleep(vary(b.ttft_ms))
        n = max(1, int(payload.get("max_tokens") or b.tokens))
        for i in range(min(n, b.tokens)):
            if i:
                await asyncio.sleep(vary(b.token_ms))
            await resp.write(_chunk(model, {"content": f"tok{i} "}))
        await resp.write(_chunk(model, {}, finish="stop"))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def get_control(_: web.Request) -> web.Response:
        return web.json_response({"name": name, "requests": state["requests"], **asdict(state["b"])})  # type: ignore[call-overload]

    async def set_control(request: web.Request) -> web.Response:
        changes = await request.json()
        current = asdict(state["b"])  # type: ignore[call-overload]
        unknown = set(changes) - set(current)
        if unknown:
            return web.json_response({"error": f"unknown fields: {sorted(unknown)}"}, status=400)
        current.update(changes)
        state["b"] = Behaviour(**current)
        return web.json_response(current)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_get("/control", get_control)
    app.router.add_post("/control", set_control)
    return app


async def serve(host: str, port: int, behaviour: Behaviour | None = None, name: str = "fake") -> None:
    runner = web.AppRunner(make_app(behaviour, name), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
