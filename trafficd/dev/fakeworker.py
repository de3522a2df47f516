"""A fake streaming inference worker (aiohttp) that speaks every API the probe does, for the demo and the tests.

| route | API | stream |
|---|---|---|
| `POST /v1/chat/completions` | OpenAI chat | role chunk, [reasoning], content chunks, finish chunk, `[DONE]` |
| `POST /v1/completions` | OpenAI completions | `choices[].text` chunks, finish chunk, `[DONE]` |
| `POST /v1/responses` | OpenAI Responses | `response.created`, deltas, `response.completed` (no `[DONE]`) |
| `POST /v1/messages` | Anthropic | `message_start`, `ping`, `content_block_delta`s, `message_delta`, `message_stop` |
| `POST /generate_stream` | TGI | one event per token, the last with `generated_text` |
| `POST /api/chat` | Ollama | newline-delimited JSON, the last line `"done": true` |
| `GET /v1/models`, `/api/tags`, `/info` | model lists | `Behaviour.models` |
| `GET /metrics` | Prometheus | vLLM's load metrics (`trafficd.dev.engine`), `model_name` the first listed model |

Every answer: the opening events at once, then `reasoning_tokens` reasoning events and `tokens` answer events (at
most the request's max tokens), the first after `ttft_ms` (plus `prefill_ms_per_ktok` per 1,000 prompt tokens),
the others `token_ms` apart, each once the engine (`trafficd.dev.engine`) has a slot for it: at most
`max_num_seqs` at once and what fits in `kv_cache_tokens`, the rest queue. `GET /metrics` publishes the load it
carries in vLLM's format. `error_rate` answers that share of requests with HTTP 500 and an error object in the
API's shape. The worker serves any model name (as llama.cpp does) but lists only `Behaviour.models`. `POST
/control` with a JSON body changes the behaviour at run time (the demo makes a region slow this way); `GET
/control` shows it. Prompts are not logged.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web

from trafficd.dev import engine as eng


@dataclass
class Behaviour:
    ttft_ms: float = 120.0  # delay before the first token (reasoning or answer)
    token_ms: float = 20.0  # pace between tokens
    tokens: int = 8  # answer tokens (0: an empty answer)
    reasoning_tokens: int = 0  # reasoning tokens before the answer
    jitter: float = 0.1  # ± share of random variation on every delay
    error_rate: float = 0.0  # share of requests answered with HTTP 500
    models: list[str] = field(default_factory=lambda: ["fake-model"])  # what the model lists show
    prefill_ms_per_ktok: float = 0.0  # prompt processing: added to the first token's delay per 1,000 prompt tokens
    max_num_seqs: int = 256  # requests served at once (vLLM's default --max-num-seqs); more wait in the queue
    kv_cache_tokens: int = 262_144  # KV-cache capacity in tokens; each running request holds prompt + answer


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + (data if isinstance(data, bytes) else json.dumps(data).encode()) + b"\n\n"


class _Format:
    """How one API frames the events of an answer (subclasses override)."""

    content_type = "text/event-stream"

    def __init__(self, model: str) -> None:
        self.model = model

    def start(self) -> list[bytes]:
        return []

    def reasoning(self, text: str) -> bytes:
        raise NotImplementedError

    def token(self, text: str) -> bytes:
        raise NotImplementedError

    def end(self) -> list[bytes]:
        raise NotImplementedError

    @staticmethod
    def error(message: str) -> dict[str, Any]:
        return {"error": {"message": message, "type": "server_error"}}


class _Chat(_Format):
    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        body = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time())}
        return _sse({**body, "model": self.model, "choices": [choice]})

    def start(self) -> list[bytes]:
        return [self.chunk({"role": "assistant"})]

    def reasoning(self, text: str) -> bytes:
        return self.chunk({"reasoning_content": text})

    def token(self, text: str) -> bytes:
        return self.chunk({"content": text})

    def end(self) -> list[bytes]:
        return [self.chunk({}, finish="stop"), b"data: [DONE]\n\n"]


class _Completions(_Format):
    def chunk(self, text: str, finish: str | None = None) -> bytes:
        choice = {"index": 0, "text": text, "finish_reason": finish}
        return _sse({"id": "cmpl-fake", "object": "text_completion", "model": self.model, "choices": [choice]})

    def reasoning(self, text: str) -> bytes:
        return _sse({"id": "cmpl-fake", "choices": [{"index": 0, "text": "", "reasoning": text}]})

    def token(self, text: str) -> bytes:
        return self.chunk(text)

    def end(self) -> list[bytes]:
        return [self.chunk("", finish="stop"), b"data: [DONE]\n\n"]


class _Responses(_Format):
    def event(self, kind: str, **fields: Any) -> bytes:
        return _sse({"type": kind, **fields}, kind)

    def start(self) -> list[bytes]:
        response = {"id": "resp_fake", "object": "response", "status": "in_progress", "model": self.model}
        return [self.event("response.created", response=response), self.event("response.in_progress")]

    def reasoning(self, text: str) -> bytes:
        return self.event("response.reasoning_summary_text.delta", item_id="rs_1", delta=text)

    def token(self, text: str) -> bytes:
        return self.event("response.output_text.delta", item_id="msg_1", output_index=0, delta=text)

    def end(self) -> list[bytes]:
        response = {"id": "resp_fake", "object": "response", "status": "completed", "model": self.model}
        return [self.event("response.output_text.done"), self.event("response.completed", response=response)]


class _Anthropic(_Format):
    def event(self, kind: str, **fields: Any) -> bytes:
        return _sse({"type": kind, **fields}, kind)

    def start(self) -> list[bytes]:
        message = {"id": "msg_fake", "type": "message", "role": "assistant", "content": [], "model": self.model}
        block = {"type": "text", "text": ""}
        return [
            self.event("message_start", message=message),
            self.event("content_block_start", index=0, content_block=block),
            self.event("ping"),
        ]

    def reasoning(self, text: str) -> bytes:
        return self.event("content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": text})

    def token(self, text: str) -> bytes:
        return self.event("content_block_delta", index=0, delta={"type": "text_delta", "text": text})

    def end(self) -> list[bytes]:
        return [
            self.event("content_block_stop", index=0),
            self.event("message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 8}),
            self.event("message_stop"),
        ]

    @staticmethod
    def error(message: str) -> dict[str, Any]:
        return {"type": "error", "error": {"type": "api_error", "message": message}}


class _Tgi(_Format):
    def token(self, text: str) -> bytes:
        return _sse({"token": {"id": 1, "text": text, "special": False}, "generated_text": None})

    def reasoning(self, text: str) -> bytes:
        return self.token(text)  # TGI has no reasoning channel

    def end(self) -> list[bytes]:
        return [_sse({"token": {"id": 2, "text": "</s>", "special": True}, "generated_text": "done"})]

    @staticmethod
    def error(message: str) -> dict[str, Any]:
        return {"error": message, "error_type": "generation"}


class _Ollama(_Format):
    content_type = "application/x-ndjson"

    def line(self, message: dict[str, Any], done: bool = False) -> bytes:
        return (
            json.dumps({"model": self.model, "message": {"role": "assistant", **message}, "done": done}).encode()
            + b"\n"
        )

    def reasoning(self, text: str) -> bytes:
        return self.line({"content": "", "thinking": text})

    def token(self, text: str) -> bytes:
        return self.line({"content": text})

    def end(self) -> list[bytes]:
        return [self.line({"content": ""}, done=True)]

    @staticmethod
    def error(message: str) -> dict[str, Any]:
        return {"error": message}


ROUTES: dict[str, type[_Format]] = {
    "/v1/chat/completions": _Chat,
    "/v1/completions": _Completions,
    "/v1/responses": _Responses,
    "/v1/messages": _Anthropic,
    "/generate_stream": _Tgi,
    "/api/chat": _Ollama,
}


def _max_tokens(payload: dict[str, Any]) -> int | None:
    for value in (
        payload.get("max_tokens"),
        payload.get("max_output_tokens"),
        (payload.get("parameters") or {}).get("max_new_tokens"),
        (payload.get("options") or {}).get("num_predict"),
    ):
        if isinstance(value, int):
            return value
    return None


async def _stream(
    request: web.Request,
    fmt: _Format,
    b: Behaviour,
    max_tokens: int | None,
    vary: Callable[[float], float],
    engine: eng.Engine,
) -> web.StreamResponse:
    """Once the engine has a slot: the opening events, then up to `max_tokens` reasoning and answer events,
    paced, then the end; a completed answer is counted."""
    limit = max_tokens or b.tokens + b.reasoning_tokens
    frames = [fmt.reasoning(f"hmm{i} ") for i in range(b.reasoning_tokens)]
    frames = (frames + [fmt.token(f"tok{i} ") for i in range(b.tokens)])[: max(0, limit)]
    prompt_tokens = max(1, (request.content_length or 0) // 4)  # about 4 characters a token
    async with engine.slot(prompt_tokens + len(frames)):
        resp = web.StreamResponse(headers={"Content-Type": fmt.content_type, "Cache-Control": "no-cache"})
        await resp.prepare(request)
        for frame in fmt.start():
            await resp.write(frame)
        first = b.ttft_ms + b.prefill_ms_per_ktok * prompt_tokens / 1000
        for i, frame in enumerate(frames):
            await asyncio.sleep(vary(first if i == 0 else b.token_ms))
            await resp.write(frame)
        for frame in fmt.end():
            await resp.write(frame)
        await resp.write_eof()
        engine.completed += 1
    return resp


def make_app(behaviour: Behaviour | None = None, name: str = "fake") -> web.Application:
    state: dict[str, Any] = {"b": behaviour or Behaviour(), "requests": 0}
    engine = eng.Engine(lambda: eng.Limits(state["b"].max_num_seqs, state["b"].kv_cache_tokens))
    metrics = eng.registry(engine, lambda: (state["b"].models or ["fake-model"])[0])

    def vary(ms: float) -> float:
        b: Behaviour = state["b"]
        return max(0.0, ms * (1.0 + random.uniform(-b.jitter, b.jitter))) / 1000.0

    def answer(fmt_cls: type[_Format]) -> Any:
        async def handler(request: web.Request) -> web.StreamResponse:
            state["requests"] += 1
            b: Behaviour = state["b"]
            payload = await request.json()
            fmt = fmt_cls(str(payload.get("model", "fake-model")))
            if b.error_rate and random.random() < b.error_rate:
                return web.json_response(fmt.error("injected failure"), status=500)
            return await _stream(request, fmt, b, _max_tokens(payload), vary, engine)

        return handler

    async def openai_models(_: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "owned_by": name} for m in state["b"].models]
        return web.json_response({"object": "list", "data": data})

    async def ollama_tags(_: web.Request) -> web.Response:
        return web.json_response({"models": [{"name": m, "model": m} for m in state["b"].models]})

    async def tgi_info(_: web.Request) -> web.Response:
        return web.json_response({"model_id": (state["b"].models or ["fake-model"])[0]})

    async def get_control(_: web.Request) -> web.Response:
        return web.json_response({"name": name, "requests": state["requests"], **asdict(state["b"])})

    async def get_metrics(_: web.Request) -> web.Response:
        return web.Response(body=eng.render(metrics), headers={"Content-Type": eng.METRICS_CONTENT_TYPE})

    async def set_control(request: web.Request) -> web.Response:
        changes = await request.json()
        current = asdict(state["b"])
        unknown = set(changes) - set(current)
        if unknown:
            return web.json_response({"error": f"unknown fields: {sorted(unknown)}"}, status=400)
        current.update(changes)
        state["b"] = Behaviour(**current)
        await engine.limits_changed()
        return web.json_response(current)

    app = web.Application()
    for path, fmt_cls in ROUTES.items():
        app.router.add_post(path, answer(fmt_cls))
    app.router.add_get("/v1/models", openai_models)
    app.router.add_get("/api/tags", ollama_tags)
    app.router.add_get("/info", tgi_info)
    app.router.add_get("/control", get_control)
    app.router.add_post("/control", set_control)
    app.router.add_get("/metrics", get_metrics)
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
