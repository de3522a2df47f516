"""The probe's prompt: the policy's short instruction, optionally padded to about `prompt_tokens` tokens.

Padding exercises prefill as real requests do. It is a seeded sequence of common English words (about one token
each with the usual BPE tokenizers, so the count is approximate) behind a per-probe number, so a server's
prefix cache cannot serve a padded prompt from the previous probe; the instruction comes last, so the answer
stays short. Without `prompt_tokens` the prompt is the instruction alone (the default: probes stay cheap).
"""

from __future__ import annotations

import random

WORDS = (  # noqa: SIM905 (a sentence is easier to read than 68 quoted words)
    "time year people way day man thing woman life child world school state family student group country "
    "problem hand part place case week company system program question work government number night point "
    "home water room mother area money story fact month lot right study book eye job word business issue "
    "side kind head house service friend father power hour game line end member law car city name"
).split()


def approx_tokens(text: str) -> int:
    """A rough token count (words and punctuation) of a short instruction."""
    return len(text.split()) + sum(not c.isalnum() and not c.isspace() for c in text)


def prompt_text(instruction: str, prompt_tokens: int | None, nonce: int) -> str:
    """The instruction alone, or padded in front to about `prompt_tokens` tokens."""
    if not prompt_tokens:
        return instruction
    lead = f"Probe {nonce}. Ignore these words:"
    n = prompt_tokens - approx_tokens(instruction) - approx_tokens(lead) - 1
    if n <= 0:
        return instruction
    rng = random.Random(nonce)
    return f"{lead} {' '.join(rng.choices(WORDS, k=n))}.\n\n{instruction}"
