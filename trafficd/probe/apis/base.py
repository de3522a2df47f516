"""The interface every streaming API ("dialect") implements: how to ask, and what each streamed event means.

A dialect is a small stateless object: `body()` builds the request, `interpret()` reads one event (an SSE event,
or one line of a newline-delimited JSON stream wrapped as an event) into a `Chunk`. The prober owns the HTTP,
the timing and the deadlines; a dialect only knows its API's shapes. Adding an API is a new module with one
`Dialect` subclass registered in `apis/__init__.py`: no change to the prober.

Reason mapping shared by every dialect (the prober applies it from the `Chunk`s):
- `Chunk.error` set (an `error` event, an error object, `response.failed`) → `error_body`, with the message;
- data that is not this API's shape (`SseMalformedData`) → `malformed_stream`;
- the stream ends without the terminal event (`Chunk.done`) and without a finish reason (`Chunk.finished`) →
  `no_done`; a finish reason then a clean end is accepted (some servers omit `[DONE]`);
- a complete answer with no content → `empty_answer` (unless the policy allows the model to answer empty).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from trafficd.probe.sse import SseEvent, SseMalformedData


@dataclass(frozen=True, slots=True)
class Chunk:
    """What one event means for the probe."""

    done: bool = False  # the API's terminal event ([DONE], message_stop, response.completed, done: true)
    error: str | None = None  # an error event or object: the server's message ("" when it gave none)
    content: bool = False  # carries answer text
    reasoning: bool = False  # carries reasoning ("thinking") text, counted apart
    finished: bool = False  # carries a finish/stop reason (the answer is complete even if the end is missing)
    keepalive: bool = False  # a keep-alive (Anthropic `ping`): not an event for the gap deadline


NOTHING = Chunk()
DONE = Chunk(done=True)
KEEPALIVE = Chunk(keepalive=True)


def chat_body(model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    """The streaming chat request both OpenAI chat completions and Anthropic Messages take: one user message."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }


def load_object(data: str) -> dict[str, Any]:
    """An event's data as a JSON object; raises `SseMalformedData` otherwise."""
    try:
        obj: Any = json.loads(data)
    except ValueError:
        raise SseMalformedData("an event's data is not JSON") from None
    if not isinstance(obj, dict):
        raise SseMalformedData("an event's data is not a JSON object")
    return obj


def error_text(obj: Any) -> str | None:
    """The message of an error object in the shapes servers use, or None when `obj` carries no error.

    `{"error": {"message": …}}` (OpenAI, Anthropic), `{"error": "…"}` (TGI, Ollama, vLLM), `{"object": "error",
    "message": …}` (vLLM), `{"type": "error", "error": {…}}` (Anthropic), `{"detail": …}` (FastAPI).
    """
    if not isinstance(obj, dict):
        return None
    err = obj.get("error")
    if isinstance(err, dict):
        return str(err.get("message") or err.get("type") or err.get("code") or "")
    if isinstance(err, str):
        return err
    if err is not None and err is not False:
        return str(err)
    if obj.get("object") == "error" or obj.get("type") == "error":
        return str(obj.get("message") or "")
    return None


def message_of(body: bytes) -> str:
    """The server's error message from a response body: the error object's message, else the text itself."""
    text = body.decode("utf-8", errors="replace")
    try:
        obj: Any = json.loads(text)
    except ValueError:
        return " ".join(text.split())
    msg = error_text(obj)
    if msg is None and isinstance(obj, dict):
        for key in ("detail", "message"):
            if obj.get(key):
                msg = obj[key] if isinstance(obj[key], str) else json.dumps(obj[key])
                break
    return " ".join((msg if msg is not None else text).split())


class Dialect(ABC):
    """One streaming API: where to post, what to send, how to read the stream, where the model list is."""

    name: ClassVar[str]
    prefix: ClassVar[str] = "/v1"  # the version segment a base URL may already end with
    endpoint: ClassVar[str]  # the path after the prefix, e.g. /chat/completions
    models_endpoint: ClassVar[str | None] = "/models"  # after the prefix; None: no model list
    framing: ClassVar[Literal["sse", "ndjson"]] = "sse"
    auth: ClassVar[tuple[str, str]] = ("Authorization", "Bearer")  # default header and scheme for the key
    headers: ClassVar[Mapping[str, str]] = {}
    terminal: ClassVar[str] = "[DONE]"  # the end of stream, named in `no_done` details

    @abstractmethod
    def body(self, model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
        """The streaming request for one probe."""

    @abstractmethod
    def interpret(self, ev: SseEvent) -> Chunk:
        """What one event means; raises `SseMalformedData` when it is not this API's shape."""

    def is_endpoint(self, path: str) -> bool:
        """A configured URL path that already names this API's endpoint (kept as it is)."""
        return path.endswith(self.endpoint)

    def model_ids(self, doc: Any) -> set[str] | None:
        """Model names in the model list's JSON (OpenAI shape: `data[].id`); None when unreadable."""
        data = doc.get("data") if isinstance(doc, dict) else None
        if not isinstance(data, list):
            return None
        return {str(m["id"]) for m in data if isinstance(m, dict) and "id" in m}

    def serves(self, listed: set[str], model: str) -> bool:
        return model in listed
