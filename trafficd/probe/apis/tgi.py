"""Hugging Face TGI: `POST /generate_stream` with `inputs`, SSE events each carrying one `token`.

A token with text that is not `special` is answer text; the last event carries `generated_text` (not null) and
ends the stream; `{"error": …}` is an error. TGI serves one model: its name is `model_id` in `GET /info`.
"""

from __future__ import annotations

from typing import Any

from trafficd.probe.apis.base import Chunk, Dialect, error_text, load_object
from trafficd.probe.sse import SseEvent, SseMalformedData


class TgiGenerate(Dialect):
    name = "tgi-generate"
    prefix = ""
    endpoint = "/generate_stream"
    models_endpoint = "/info"
    terminal = "the event with generated_text"

    def body(self, model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
        return {"inputs": prompt, "parameters": {"max_new_tokens": max_tokens, "details": False}}

    def interpret(self, ev: SseEvent) -> Chunk:
        obj = load_object(ev.data.strip())
        message = error_text(obj)
        if message is not None:
            return Chunk(error=message)
        token = obj.get("token")
        if not isinstance(token, dict):
            raise SseMalformedData("a TGI event has no token")
        content = bool(token.get("text")) and not token.get("special")
        return Chunk(content=content, done=obj.get("generated_text") is not None)

    def model_ids(self, doc: Any) -> set[str] | None:
        if isinstance(doc, dict) and isinstance(doc.get("model_id"), str):
            return {doc["model_id"]}
        return None
