"""OpenAI (legacy) completions: `POST /v1/completions` with a `prompt`, SSE chunks with `choices[].text`, `[DONE]`."""

from __future__ import annotations

from typing import Any

from trafficd.probe.apis.base import Chunk, Dialect
from trafficd.probe.apis.openai_chat import interpret_openai
from trafficd.probe.sse import SseEvent


class OpenAICompletions(Dialect):
    name = "openai-completions"
    endpoint = "/completions"

    def body(self, model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
        return {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}

    def is_endpoint(self, path: str) -> bool:
        return path.endswith(self.endpoint) and not path.endswith("/chat/completions")

    def interpret(self, ev: SseEvent) -> Chunk:
        return interpret_openai(ev, "text")
