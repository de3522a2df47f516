"""OpenAI chat completions: `POST /v1/chat/completions`, SSE chunks with `choices[].delta`, ended by `[DONE]`.

First token: the first chunk with a non-empty `delta.content` (role-only chunks and `content: ""` don't count);
`delta.reasoning_content` / `delta.reasoning` (vLLM, DeepSeek, llama.cpp) is reasoning, counted apart. A
`usage`-only chunk (`choices: []`) is accepted. `{"error": …}` in the stream, or `event: error`, is an error.
"""

from __future__ import annotations

from typing import Any

from trafficd.probe.apis.base import DONE, NOTHING, Chunk, Dialect, chat_body, error_text, load_object
from trafficd.probe.sse import SseEvent, SseMalformedData


def read_choices(obj: dict[str, Any], text_key: str) -> Chunk:
    """The meaning of a chunk's `choices` (chat: `delta.content`; completions: `text`)."""
    choices = obj.get("choices")
    if choices is None or choices == []:
        if choices == [] or obj.get("usage") is not None:
            return NOTHING
        raise SseMalformedData("a chunk has neither choices nor usage")
    if not isinstance(choices, list):
        raise SseMalformedData("a chunk's choices is not a list")
    content = reasoning = finished = False
    for choice in choices:
        if not isinstance(choice, dict):
            raise SseMalformedData("a choice is not an object")
        part = choice.get("delta") if text_key == "content" else choice
        part = part or {}
        if not isinstance(part, dict):
            raise SseMalformedData("a delta is not an object")
        content = content or bool(part.get(text_key))
        reasoning = reasoning or bool(part.get("reasoning_content") or part.get("reasoning"))
        finished = finished or bool(choice.get("finish_reason"))
    return Chunk(content=content, reasoning=reasoning, finished=finished)


def interpret_openai(ev: SseEvent, text_key: str) -> Chunk:
    data = ev.data.strip()
    if data == "[DONE]":
        return DONE
    if ev.event == "error":
        try:
            return Chunk(error=error_text(load_object(data)) or "")
        except SseMalformedData:
            return Chunk(error=data)
    obj = load_object(data)
    message = error_text(obj)
    if message is not None:
        return Chunk(error=message)
    return read_choices(obj, text_key)


class OpenAIChat(Dialect):
    name = "openai-chat"
    endpoint = "/chat/completions"

    def body(self, model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
        return chat_body(model, prompt, max_tokens)

    def interpret(self, ev: SseEvent) -> Chunk:
        return interpret_openai(ev, "content")
