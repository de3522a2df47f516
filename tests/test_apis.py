"""Each streaming API's dialect (pure): request shape, what each event means, URLs as users write them, the
server's message scrubbed of the key and the prompt, and the padded prompt."""

from __future__ import annotations

import json
from typing import get_args

import pytest

from trafficd.policy.schema import ApiName
from trafficd.probe.apis import DIALECTS, dialect
from trafficd.probe.apis.base import Chunk, message_of
from trafficd.probe.credentials import Secret
from trafficd.probe.prompts import prompt_text
from trafficd.probe.scrub import server_message, without_prompt
from trafficd.probe.sse import SseEvent, SseMalformedData
from trafficd.probe.urls import endpoint


def ev(data: object, event: str = "message") -> SseEvent:
    return SseEvent(data if isinstance(data, str) else json.dumps(data), event=event)


def test_policy_api_names_are_the_dialects() -> None:
    """The schema's `api:` values and the registered dialects are the same list."""
    assert set(get_args(ApiName)) == set(DIALECTS)


def test_openai_chat_chunks() -> None:
    """Content, role-only, empty, reasoning, finish, usage, [DONE] and error chunks are told apart."""
    d = dialect("openai-chat")

    def chunk(delta: object) -> SseEvent:
        return ev({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]})

    assert d.interpret(chunk({"content": "hi"})).content
    assert d.interpret(chunk({"role": "assistant"})) == Chunk()
    assert not d.interpret(chunk({"content": ""})).content
    r = d.interpret(chunk({"reasoning_content": "think"}))
    assert r.reasoning and not r.content
    assert d.interpret(chunk({"reasoning": "think"})).reasoning
    assert d.interpret(ev({"choices": [{"delta": {}, "finish_reason": "stop"}]})).finished
    assert d.interpret(ev({"choices": [], "usage": {"completion_tokens": 3}})) == Chunk()
    assert d.interpret(ev("[DONE]")).done
    assert d.interpret(ev({"error": {"message": "overloaded"}})).error == "overloaded"
    assert d.interpret(ev("oops", event="error")).error == "oops"
    for bad in ("{not json", "[1, 2]", '{"id": "x"}', '{"choices": "x"}'):
        with pytest.raises(SseMalformedData):
            d.interpret(ev(bad))


def test_openai_completions_reads_text() -> None:
    """Completions chunks carry `choices[].text`; [DONE] ends them."""
    d = dialect("openai-completions")
    assert d.interpret(ev({"choices": [{"text": "ok", "finish_reason": None}]})).content
    assert not d.interpret(ev({"choices": [{"text": "", "finish_reason": "length"}]})).content
    assert d.interpret(ev({"choices": [{"text": "", "finish_reason": "length"}]})).finished
    assert d.interpret(ev("[DONE]")).done
    assert d.body("m", "p", 5) == {"model": "m", "prompt": "p", "max_tokens": 5, "temperature": 0, "stream": True}


def test_openai_responses_named_events() -> None:
    """output_text.delta is content, reasoning deltas are reasoning, completed ends, failed and error are errors."""
    d = dialect("openai-responses")
    assert d.interpret(ev({"type": "response.created", "response": {}})) == Chunk()
    assert d.interpret(ev({"type": "response.output_text.delta", "delta": "ok"})).content
    assert not d.interpret(ev({"type": "response.output_text.delta", "delta": ""})).content
    assert d.interpret(ev({"type": "response.reasoning_summary_text.delta", "delta": "hm"})).reasoning
    assert d.interpret(ev({"type": "response.completed", "response": {}})).done
    assert d.interpret(ev({"type": "response.incomplete", "response": {}})).done
    failed = {"type": "response.failed", "response": {"error": {"code": "server_error", "message": "boom"}}}
    assert d.interpret(ev(failed)).error == "boom"
    assert d.interpret(ev({"type": "error", "code": "x", "message": "bad"}, "error")).error == "bad"
    assert d.body("m", "p", 9)["max_output_tokens"] == 9 and d.body("m", "p", 9)["input"] == "p"


def test_anthropic_messages_events() -> None:
    """text_delta is content, thinking_delta reasoning, ping a keep-alive, message_stop the end, error an error."""
    d = dialect("anthropic-messages")
    delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ok"}}
    assert d.interpret(ev(delta, "content_block_delta")).content
    thinking = {"type": "content_block_delta", "delta": {"type": "thinking_delta", "thinking": "hm"}}
    assert d.interpret(ev(thinking)).reasoning
    assert d.interpret(ev({"type": "ping"}, "ping")).keepalive
    assert d.interpret(ev({"type": "message_delta", "delta": {"stop_reason": "end_turn"}})).finished
    assert d.interpret(ev({"type": "message_stop"}, "message_stop")).done
    err = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert d.interpret(ev(err, "error")).error == "Overloaded"
    assert d.headers == {"anthropic-version": "2023-06-01"} and d.auth == ("x-api-key", "")


def test_tgi_and_ollama() -> None:
    """TGI tokens (special ones are not content) end with generated_text; Ollama lines end with done: true."""
    tgi = dialect("tgi-generate")
    assert tgi.interpret(ev({"token": {"text": "ok", "special": False}, "generated_text": None})).content
    last = tgi.interpret(ev({"token": {"text": "</s>", "special": True}, "generated_text": "ok"}))
    assert last.done and not last.content
    assert tgi.interpret(ev({"error": "Input validation error", "error_type": "validation"})).error
    assert tgi.model_ids({"model_id": "bigscience/bloom"}) == {"bigscience/bloom"}
    ollama = dialect("ollama-chat")
    assert ollama.interpret(ev({"message": {"role": "assistant", "content": "ok"}, "done": False})).content
    assert ollama.interpret(ev({"message": {"role": "assistant", "thinking": "hm"}, "done": False})).reasoning
    assert ollama.interpret(ev({"message": {"content": ""}, "done": True, "done_reason": "stop"})).done
    assert ollama.interpret(ev({"error": "model 'x' not found"})).error == "model 'x' not found"
    assert ollama.serves(ollama.model_ids({"models": [{"name": "llama3:latest"}]}) or set(), "llama3")


@pytest.mark.parametrize(
    ("url", "api", "request_url", "models_url"),
    [
        ("http://h:8000", "openai-chat", "http://h:8000/v1/chat/completions", "http://h:8000/v1/models"),
        ("http://h:8000/", "openai-chat", "http://h:8000/v1/chat/completions", "http://h:8000/v1/models"),
        ("http://h:8000/v1", "openai-chat", "http://h:8000/v1/chat/completions", "http://h:8000/v1/models"),
        ("http://h:8000/v1/", "openai-chat", "http://h:8000/v1/chat/completions", "http://h:8000/v1/models"),
        ("http://h/v1/chat/completions/", "openai-chat", "http://h/v1/chat/completions", "http://h/v1/models"),
        ("http://h/openai/v1", "openai-completions", "http://h/openai/v1/completions", "http://h/openai/v1/models"),
        ("http://h/v1/completions", "openai-completions", "http://h/v1/completions", "http://h/v1/models"),
        ("http://h/v1", "openai-responses", "http://h/v1/responses", "http://h/v1/models"),
        ("https://h/v1/", "anthropic-messages", "https://h/v1/messages", "https://h/v1/models"),
        ("http://h:8080/", "tgi-generate", "http://h:8080/generate_stream", "http://h:8080/info"),
        ("http://h:11434", "ollama-chat", "http://h:11434/api/chat", "http://h:11434/api/tags"),
        ("http://h:11434/api/", "ollama-chat", "http://h:11434/api/chat", "http://h:11434/api/tags"),
        ("http://h/x?api-version=1", "openai-chat", "http://h/x/v1/chat/completions?api-version=1", None),
    ],
)
def test_urls_as_users_write_them(url: str, api: str, request_url: str, models_url: str | None) -> None:
    """A base URL with or without /v1, trailing slashes, or the full endpoint gives the API's URLs."""
    ep = endpoint(url, None, dialect(api))
    assert ep is not None and str(ep.url) == request_url and ep.shown == request_url
    if models_url is not None:
        models = endpoint(url, None, dialect(api), models=True)
        assert models is not None and str(models.url) == models_url


def test_address_keeps_the_name_in_what_is_shown() -> None:
    """Connecting to an address, the URL shown keeps the host name and says where it connected."""
    ep = endpoint("https://worker.test:8443/v1", "10.0.0.7", dialect("openai-chat"))
    assert ep is not None and ep.url.host == "10.0.0.7" and ep.server_name == "worker.test"
    assert ep.shown == "https://worker.test:8443/v1/chat/completions via 10.0.0.7"


def test_server_message_shapes() -> None:
    """The message is taken from OpenAI, Anthropic, string, FastAPI and plain-text error bodies."""
    assert message_of(b'{"error": {"message": "The model `x` does not exist", "type": "invalid"}}') == (
        "The model `x` does not exist"
    )
    assert message_of(b'{"type": "error", "error": {"type": "authentication_error", "message": "bad key"}}') == (
        "bad key"
    )
    assert message_of(b'{"error": "model not found"}') == "model not found"
    assert message_of(b'{"detail": "Not Found"}') == "Not Found"
    assert message_of(b"<html>\n  502 Bad Gateway\n</html>") == "<html> 502 Bad Gateway </html>"


def test_server_message_never_echoes_key_or_prompt_and_is_short() -> None:
    """The key becomes ***, the prompt (whole or a 16+ character piece) [prompt], and at most 200 characters stay."""
    key = Secret("sk-live-0123456789")
    prompt = prompt_text("Reply with the single word: ok", 300, nonce=7)
    body = json.dumps({"error": {"message": f"got '{key.reveal()}' for '{prompt[40:90]}' ({prompt})" + "x" * 500}})
    msg = server_message(body.encode(), key, prompt)
    assert key.reveal() not in msg and "***" in msg
    assert prompt[40:90] not in msg and "[prompt]" in msg and len(msg) <= 200
    assert without_prompt("context length exceeded", prompt) == "context length exceeded"


def test_padded_prompt_is_about_the_asked_length_and_differs_per_probe() -> None:
    """prompt_tokens pads to about that many words, ends with the instruction, and changes with the nonce."""
    base = "Reply with the single word: ok"
    assert prompt_text(base, None, 1) == base
    padded = prompt_text(base, 1000, 1)
    assert padded.endswith(base) and 950 <= len(padded.split()) <= 1000
    assert prompt_text(base, 1000, 2) != padded
