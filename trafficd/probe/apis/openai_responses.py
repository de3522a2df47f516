"""OpenAI Responses: `POST /v1/responses`, named SSE events, no `[DONE]`.

The first `response.output_text.delta` with text is the first token; `response.reasoning_text.delta` and
`response.reasoning_summary_text.delta` are reasoning. `response.completed` and `response.incomplete` (e.g.
`max_output_tokens` reached) end the stream; `response.failed` and `error` are errors with their message. Every
other event (`response.created`, `response.output_item.added`, …) is accepted and means nothing to the probe.
"""

from __future__ import annotations

from typing import Any

from trafficd.probe.apis.base import DONE, NOTHING, Chunk, Dialect, error_text, load_object
from trafficd.probe.sse import SseEvent

_REASONING = frozenset({"response.reasoning_text.delta", "response.reasoning_summary_text.delta"})


class OpenAIResponses(Dialect):
    name = "openai-responses"
    endpoint = "/responses"
    terminal = "response.completed"

    def body(self, model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
        return {"model": model, "input": prompt, "max_output_tokens": max_tokens, "temperature": 0, "stream": True}

    def interpret(self, ev: SseEvent) -> Chunk:
        obj = load_object(ev.data.strip())
        kind = str(obj.get("type") or ev.event)
        if kind == "response.output_text.delta":
            return Chunk(content=bool(obj.get("delta")))
        if kind in _REASONING:
            return Chunk(reasoning=bool(obj.get("delta")))
        if kind in ("response.completed", "response.incomplete"):
            return DONE
        if kind == "response.failed":
            response = obj.get("response")
            message = error_text(response) if isinstance(response, dict) else None
            return Chunk(error=message or "")
        if kind == "error":
            return Chunk(error=error_text(obj) or str(obj.get("message") or ""))
        return NOTHING
