"""Values people write in policy files: durations (`3s`), percentages (`75%`), names, environment-variable names
and URLs, each with a message that tells the person editing the file what to write instead.

Secrets are never echoed: an environment-variable name that looks wrong is refused without showing it (someone
may have pasted the secret itself), and a URL carrying credentials is refused without repeating it.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, WithJsonSchema

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_SPACED_RE = re.compile(r"^(\d+(?:\.\d+)?)\s+(ms|s|m|h)$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """`3s` → 3.0, `250ms` → 0.25, `5m` → 300.0. Bare numbers are refused: the unit must be written."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"a duration must be greater than zero, and needs a unit like '3s' (got {value})")
        raise ValueError(f"a duration needs a unit: write '{value:g}s', not {value}")
    if not isinstance(value, str):
        raise ValueError("expected a duration like '3s', '250ms' or '5m'")
    text = value.strip()
    spaced = _SPACED_RE.match(text)
    if spaced:
        raise ValueError(f"write a duration without a space: '{spaced.group(1)}{spaced.group(2)}', not '{value}'")
    if re.fullmatch(r"\d+(\.\d+)?", text):
        raise ValueError(f"a duration needs a unit: write '{text}s', not '{value}'")
    if text.startswith("-") and _DURATION_RE.match(text[1:]):
        raise ValueError(f"a duration must be greater than zero (got '{value}')")
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError(f"not a duration: '{value}'; write a number and a unit: '3s', '250ms', '5m' or '1h'")
    seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    if seconds <= 0:
        raise ValueError(f"a duration must be greater than zero (got '{value}')")
    return seconds


def format_duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    if seconds >= 1 and float(seconds).is_integer():
        return f"{int(seconds)}s"
    ms = seconds * 1000
    return f"{int(ms)}ms" if float(ms).is_integer() else f"{ms:g}ms"


def parse_percent(value: object) -> float:
    """`75%` → 0.75. Bare numbers are refused so that 75 and 0.75 cannot be confused."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f"write a percentage with '%', like '75%' (got {value}; 0.75 and 75 are easy to confuse)")
    if isinstance(value, str) and _DURATION_RE.match(value.strip()):
        raise ValueError(f"expected a percentage like '80%', not a duration ('{value}')")
    if not isinstance(value, str) or not value.strip().endswith("%"):
        raise ValueError(f"write a percentage like '75%' (got {value!r})")
    try:
        pct = float(value.strip()[:-1])
    except ValueError:
        raise ValueError(f"not a percentage: {value!r}; write it like '75%'") from None
    if not 0.0 <= pct <= 100.0:
        raise ValueError(f"percentage must be between 0% and 100% (got {value!r})")
    return pct / 100.0


def _format_percent(fraction: float) -> str:
    return f"{fraction * 100:g}%"


# Seconds as float in Python; `3s` in YAML and in `policy show`.
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\d+(\.\d+)?(ms|s|m|h)$", "examples": ["3s", "250ms", "5m"]}),
]
# Fraction in [0, 1] in Python; `75%` in YAML.
Percent = Annotated[
    float,
    BeforeValidator(parse_percent),
    PlainSerializer(_format_percent, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\d+(\.\d+)?%$", "examples": ["75%"]}),
]

_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def check_name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError(f"'{value}' is not a valid name: use lower-case letters, digits and '-' (like 'us-east')")
    return value


Name = Annotated[str, AfterValidator(check_name)]
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_env_name(value: str) -> str:
    """The NAME of an environment variable; the value is never echoed (someone may have pasted the secret)."""
    if not _ENV_RE.match(value):
        raise ValueError("must be the name of an environment variable (letters, digits, '_'), not the secret itself")
    return value


EnvName = Annotated[str, AfterValidator(_check_env_name)]


def check_url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"must be an http:// or https:// URL (got '{value}')")
    if "@" in value.split("//", 1)[1].split("/", 1)[0]:
        raise ValueError("the URL contains credentials; remove them and use probe.auth.api_key_env or api_key_file")
    return value


def check_redis_url(value: str) -> str:
    if not re.match(r"^(redis|rediss|unix)://", value):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    netloc = value.split("//", 1)[1].split("/", 1)[0]
    if ":" in netloc.rpartition("@")[0]:
        raise ValueError(
            "inline secret: the URL contains a password; remove it from the URL and use "
            "redis.password_env or redis.password_file"
        )
    return value
