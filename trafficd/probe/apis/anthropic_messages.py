"""Anthropic Messages: `POST /v1/messages` with `x-api-key` and `anthropic-version`, named SSE events.

The first `content_block_delta` carrying text (`text_delta`) is the first token; `thinking_delta` is reasoning.
`message_delta` with a `stop_reason` marks the answer complete, `message_stop` ends the stream; `ping`,
`message_start`, `content_block_start/stop` mean nothing to the probe; an `error` event is an error with its
message (e.g. `overloaded_error`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from trafficd.probe.apis.base import DONE, KEEPALIVE, NOTHING, Chunk, Dialect, chat_body, error_text, load_object
from trafficd.probe.sse import SseEvent

VERSION = "2023-06-01"


class AnthropicMessages(Dialect):
    name = "anthropic-messages"
    endpoint = "/messages"
    auth = ("x-api-key", "")
    headers: ClassVar[Mapping[str, str]] = {"anthropic-version": VERSION}
    terminal = "message_stop"

    def body(self, model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
        return chat_body(model, prompt, max_tokens)

    def interpret(self, ev: SseEvent) -> Chunk:
        obj = load_object(ev.data.strip())
        kind = str(obj.get("type") or ev.event)
        if kind == "content_block_delta":
            delta = obj.get("delta") if isinstance(obj.get("delta"), dict) else {}
            assert isinstance(delta, dict)
            return Chunk(content=bool(delta.get("text")), reasoning=bool(delta.get("thinking")))
        if kind == "message_delta":
            delta = obj.get("delta")
            return Chunk(finished=isinstance(delta, dict) and bool(delta.get("stop_reason")))
        if kind == "message_stop":
            return DONE
        if kind == "ping":
            return KEEPALIVE
        if kind == "error" or ev.event == "error":
            return Chunk(error=error_text(obj) or "")
        return NOTHING
