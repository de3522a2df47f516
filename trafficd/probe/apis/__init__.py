"""The streaming APIs the probe speaks, one `Dialect` per module (see `base.py` for the interface).

| policy `api:` | module | request | stream |
|---|---|---|---|
| `openai-chat` (default) | `openai_chat` | `POST {base}/v1/chat/completions` | SSE chunks, `[DONE]` |
| `openai-completions` | `openai_completions` | `POST {base}/v1/completions` | SSE chunks (`choices[].text`), `[DONE]` |
| `openai-responses` | `openai_responses` | `POST {base}/v1/responses` | named SSE events, `response.completed` |
| `anthropic-messages` | `anthropic_messages` | `POST {base}/v1/messages` | named SSE events, `message_stop` |
| `tgi-generate` | `tgi` | `POST {base}/generate_stream` | SSE tokens, the event with `generated_text` |
| `ollama-chat` | `ollama_chat` | `POST {base}/api/chat` | newline-delimited JSON, `"done": true` |
"""

from __future__ import annotations

from trafficd.probe.apis.anthropic_messages import AnthropicMessages
from trafficd.probe.apis.base import Chunk, Dialect
from trafficd.probe.apis.ollama_chat import OllamaChat
from trafficd.probe.apis.openai_chat import OpenAIChat
from trafficd.probe.apis.openai_completions import OpenAICompletions
from trafficd.probe.apis.openai_responses import OpenAIResponses
from trafficd.probe.apis.tgi import TgiGenerate

DIALECTS: dict[str, Dialect] = {
    d.name: d
    for d in (OpenAIChat(), OpenAICompletions(), OpenAIResponses(), AnthropicMessages(), TgiGenerate(), OllamaChat())
}


def dialect(name: str) -> Dialect:
    """The dialect of a policy `api:` name (the schema only admits names listed here)."""
    return DIALECTS[name]


__all__ = ["DIALECTS", "Chunk", "Dialect", "dialect"]
