"""The server's error message as it may appear in details and logs: at most 200 characters, with the API key
and the probe's prompt text removed (a server may echo either: llm-katan's key check prints the key it got).

The key is replaced by `***` (`Secret.redact`); the prompt, or any run of 16 or more characters copied from it
(servers quote truncated prompts), by `[prompt]`.
"""

from __future__ import annotations

from trafficd.probe.apis.base import message_of
from trafficd.probe.credentials import Secret

MESSAGE_CHARS = 200
BODY_BYTES = 8192  # read at most this much of an error response
_RUN = 16  # shortest run of prompt characters that is removed
_PROMPT = "[prompt]"


def without_prompt(text: str, prompt: str) -> str:
    if not prompt:
        return text
    text = text.replace(prompt, _PROMPT)
    if len(prompt) < _RUN:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        if i + _RUN <= len(text) and text[i : i + _RUN] in prompt:
            j = i + _RUN
            while j < len(text) and text[i : j + 1] in prompt:
                j += 1
            out.append(_PROMPT)
            i = j
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def scrub(text: str, secret: Secret | None, prompt: str) -> str:
    """`text` without the key and the prompt."""
    if secret is not None:
        text = secret.redact(text)
    return without_prompt(text, prompt)


def server_message(body: bytes, secret: Secret | None, prompt: str) -> str:
    """The first 200 characters of the error message in a response body, scrubbed."""
    message = scrub(message_of(body[:BODY_BYTES])[: MESSAGE_CHARS * 4], secret, prompt)
    return message if len(message) <= MESSAGE_CHARS else message[: MESSAGE_CHARS - 1] + "…"
