"""Ollama chat: `POST /api/chat`, newline-delimited JSON (not SSE), the last line has `"done": true`.

`message.content` is answer text, `message.thinking` reasoning; `{"error": "…"}` is an error. The model list is
`GET /api/tags` (`models[].name`, e.g. `llama3.2:latest`; a policy name without a tag means `:latest`).
"""

from __future__ import annotations

from typing import Any

from trafficd.probe.apis.base import Chunk, Dialect, error_text, load_object
from trafficd.probe.sse import SseEvent


class OllamaChat(Dialect):
    name = "ollama-chat"
    prefix = "/api"
    endpoint = "/chat"
    models_endpoint = "/tags"
    framing = "ndjson"
    terminal = '"done": true'

    def is_endpoint(self, path: str) -> bool:
        return path.endswith("/api/chat")

    def body(self, model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
        return {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "stream": True,
            "options": {"num_predict": max_tokens, "temperature": 0},
        }

    def interpret(self, ev: SseEvent) -> Chunk:
        obj = load_object(ev.data.strip())
        message = error_text(obj)
        if message is not None:
            return Chunk(error=message)
        msg = obj.get("message")
        msg = msg if isinstance(msg, dict) else {}
        return Chunk(
            content=bool(msg.get("content")),
            reasoning=bool(msg.get("thinking")),
            done=obj.get("done") is True,
        )

    def model_ids(self, doc: Any) -> set[str] | None:
        models = doc.get("models") if isinstance(doc, dict) else None
        if not isinstance(models, list):
            return None
        return {str(m.get("name") or m.get("model")) for m in models if isinstance(m, dict)}

    def serves(self, listed: set[str], model: str) -> bool:
        return model in listed or (":" not in model and f"{model}:latest" in listed)
