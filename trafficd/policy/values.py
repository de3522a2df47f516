"""Values people write in policy files: durations (`3s`), percentages (`75%`), names, environment-variable names
and URLs, each with a message that tells the person editing the file what to write instead.

Secrets are never echoed: an environment-variable name that looks wrong is refused without showing it (someone
may have pasted the secret itself), and a URL carrying credentials is refused without repeating it.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
)

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_SPACED_RE = re.compile(r"^(\d+(?:\.\d+)?)\s+(ms|s|m|h)$")
_SPACED_PERCENT_RE = re.compile(r"^(-?\d+(?:\.\d+)?)\s+%$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_DURATION_S = 30 * 24 * 3600.0  # nothing in a policy is meant to last longer than 30 days


def parse_duration(value: object) -> float:
    """`3s` → 3.0, `250ms` → 0.25, `5m` → 300.0. Bare numbers are refused: the unit must be written."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"a duration must be greater than zero, and needs a unit like '3s' (got {value})")
        raise ValueError(f"a duration needs a unit: write {_with_units(f'{value:g}')}, not {value}")
    if not isinstance(value, str):
        raise ValueError("expected a duration like '3s', '250ms' or '5m'")
    text = value.strip()
    spaced = _SPACED_RE.match(text)
    if spaced:
        raise ValueError(f"write a duration without a space: '{spaced.group(1)}{spaced.group(2)}', not '{value}'")
    if re.fullmatch(r"\d+(\.\d+)?", text):
        raise ValueError(f"a duration needs a unit: write {_with_units(text)}, not '{value}'")
    if text.startswith("-") and _DURATION_RE.match(text[1:]):
        raise ValueError(f"a duration must be greater than zero (got '{value}')")
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError(f"not a duration: '{value}'; write a number and a unit: '3s', '250ms', '5m' or '1h'")
    seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    if seconds <= 0:
        raise ValueError(f"a duration must be greater than zero (got '{value}')")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"'{value}' is longer than 30 days (720h), the longest duration a policy takes")
    return seconds


def _with_units(number: str) -> str:
    """'3' → "'3s' or '3ms'"; '300' → "'300ms' or '300s'" (the likelier unit first)."""
    likely, other = ("ms", "s") if float(number) >= 100 else ("s", "ms")
    return f"'{number}{likely}' or '{number}{other}'"


def format_duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    if seconds >= 1:
        rounded = round(seconds, 3)
        return f"{int(rounded)}s" if rounded.is_integer() else f"{rounded!r}s"
    ms = seconds * 1000
    return f"{int(ms)}ms" if float(ms).is_integer() else f"{ms:g}ms"


def parse_percent(value: object, *, allow_over_100: bool = False) -> float:
    """`75%` → 0.75. Bare numbers are refused so that 75 and 0.75 cannot be confused."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if 0 < value < 1:
            raise ValueError(f"write a percentage with its '%' sign: '{value * 100:g}%' for the fraction {value}")
        raise ValueError(f"write a percentage with its '%' sign: '{value:g}%' (got {value})")
    if isinstance(value, str) and _DURATION_RE.match(value.strip()):
        raise ValueError(f"expected a percentage like '80%', not a duration ('{value}')")
    if not isinstance(value, str) or not value.strip().endswith("%"):
        raise ValueError(f"write a percentage like '75%' (got {value!r})")
    spaced = _SPACED_PERCENT_RE.match(value.strip())
    if spaced:  # the same rule as durations: no space between the number and its unit
        raise ValueError(f"write a percentage without a space: '{spaced.group(1)}%', not '{value}'")
    number = value.strip()[:-1]
    if not re.fullmatch(r"-?\d+(\.\d+)?", number):
        raise ValueError(f"not a percentage: {value!r}; write it like '75%'")
    pct = float(number)
    if pct < 0.0:
        raise ValueError(f"a percentage cannot be negative (got '{value}')")
    if pct > 100.0 and not allow_over_100:
        raise ValueError(f"a percentage must be between 0% and 100% (got '{value}')")
    return pct / 100.0


def format_percent(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def parse_share_below_slo(value: object) -> float:
    """A share of the SLO that must stay under it (recover.below): '80%' → 0.8; '120%' is refused as such."""
    share = parse_percent(value, allow_over_100=True)
    if share >= 1.0:
        raise ValueError(
            f"{format_percent(share)} of the SLO would let a region count as recovered while still breaching; "
            "it must be under 100% (e.g. 80%)"
        )
    return share


DURATION_PATTERN = r"^\d+(\.\d+)?(ms|s|m|h)$"  # for the JSON Schema; parse_duration's messages are better
PERCENT_PATTERN = r"^\d+(\.\d+)?%$"

# Seconds as float in Python; `3s` in YAML and in `policy show`.
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "examples": ["3s", "250ms", "5m"]}),
]


def check_concurrency(value: object) -> int | str:
    """`auto` or a whole number 1–1024 (probes in flight per agent)."""
    if value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be `auto` or a whole number from 1 to 1024 (got {value!r})")
    if value < 1:
        raise ValueError(f"must be at least 1 (got {value})")
    if value > 1024:
        raise ValueError(f"must be at most 1024 (got {value}); for more, split the region with --shard I/N")
    return value


Concurrency = Annotated[
    int | Literal["auto"],
    PlainValidator(check_concurrency),
    WithJsonSchema({"oneOf": [{"type": "integer", "minimum": 1, "maximum": 1024}, {"const": "auto"}]}),
]
# Fraction in [0, 1) in Python; `80%` in YAML: a share of the SLO a latency must stay below (recover.below).
ShareBelowSlo = Annotated[
    float,
    BeforeValidator(parse_share_below_slo),
    PlainSerializer(format_percent, return_type=str),
    WithJsonSchema({"type": "string", "pattern": PERCENT_PATTERN, "examples": ["80%"]}),
]
# Fraction in [0, 1] in Python; `75%` in YAML.
Percent = Annotated[
    float,
    BeforeValidator(parse_percent),
    PlainSerializer(format_percent, return_type=str),
    WithJsonSchema({"type": "string", "pattern": PERCENT_PATTERN, "examples": ["75%"]}),
]

_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


SCHEMA_VERSION = 1


def check_version(value: object) -> object:
    """`version: 1` is required so that a file written for another format is never misread."""
    if isinstance(value, int) and not isinstance(value, bool) and value != SCHEMA_VERSION:
        raise ValueError(f"policy version {value} is not supported: this trafficd reads version {SCHEMA_VERSION}")
    return value


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
    if not re.match(r"^(redis|rediss|unix|redis\+cluster|rediss\+cluster|redis\+sentinel|rediss\+sentinel)://", value):
        raise ValueError(
            "must be a redis://, rediss:// or unix:// URL, redis+cluster://host:port,… or "
            "redis+sentinel://host:port,…/<primary name>"
        )
    netloc = value.split("//", 1)[1].split("/", 1)[0]
    if ":" in netloc.rpartition("@")[0]:
        raise ValueError(
            "inline secret: the URL contains a password; remove it from the URL and use "
            "redis.password_env or redis.password_file"
        )
    return value


# ---------------------------------------------------------------- Route 53 names

_ZONE_ID_RE = re.compile(r"^(/hostedzone/)?[A-Z0-9]{1,32}$")
_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def check_zone_id(value: str) -> str:
    """A hosted zone id as Route 53 prints it: `Z0123456789EXAMPLE` (or `/hostedzone/Z0…`)."""
    if not value.strip():
        raise ValueError("must not be empty; copy the hosted zone's id from Route 53 (like 'Z0123456789EXAMPLE')")
    if not _ZONE_ID_RE.match(value):
        raise ValueError(
            f"'{value}' is not a Route 53 hosted zone id: upper-case letters and digits only, no spaces "
            "(like 'Z0123456789EXAMPLE' or '/hostedzone/Z0123456789EXAMPLE')"
        )
    return value


def is_host_name(value: str) -> bool:
    """A DNS host name (letters, digits, '-' in dot-separated labels; one trailing dot allowed), not an IP."""
    name = value[:-1] if value.endswith(".") else value
    if not name or len(name) > 253 or is_ip(name):
        return False
    return all(_LABEL_RE.match(label) for label in name.lower().split("."))


def is_ip(value: str, version: int | None = None) -> bool:
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return False
    return version is None or ip.version == version


def check_host_name(value: str) -> str:
    if not is_host_name(value):
        raise ValueError(
            f"'{value}' is not a host name: write labels of letters, digits and '-' separated by dots "
            "(like 'api.example.com.')"
        )
    return value


def check_endpoint(value: str) -> str:
    """A region's endpoint: a host name (for CNAME records) or an IP address (for A/AAAA records)."""
    if not (is_host_name(value) or is_ip(value)):
        raise ValueError(
            f"'{value}' is neither a host name nor an IP address: write the load balancer's name "
            "(like 'us-east.lb.example.com') or, for A/AAAA records, its address"
        )
    return value


HostName = Annotated[str, AfterValidator(check_host_name)]
Endpoint = Annotated[str, AfterValidator(check_endpoint)]
ZoneId = Annotated[str, AfterValidator(check_zone_id)]


@functools.cache
def aws_regions() -> tuple[str, ...]:
    """Every AWS region botocore knows (its endpoints data, all partitions): the list moves with botocore.

    Read from botocore's data file without importing botocore (the policy is pure core: no I/O library)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("botocore")  # locates the package; does not execute it
    if spec is None or not spec.submodule_search_locations:
        return ()
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "endpoints.json"
    return partition_regions(path.read_text(encoding="utf-8"))


def partition_regions(text: str) -> tuple[str, ...]:
    """The region names of every partition in botocore's endpoints.json: `json.loads(text)["partitions"][i]
    ["regions"]` keys, read by decoding only the `"regions"` objects (the file is 1.2 MB of services; parsing all
    of it took ~10 ms of every command's start). An object counts when each value is a region's description."""
    import json

    decoder = json.JSONDecoder()
    names: set[str] = set()
    for match in re.finditer(r'"regions"\s*:\s*(?=\{)', text):
        found, _ = decoder.raw_decode(text, match.end())
        if found and all(isinstance(v, dict) and "description" in v for v in found.values()):
            names.update(found)
    return tuple(sorted(names))


def check_aws_region(value: str) -> str:
    known = aws_regions()
    if value in known:
        return value
    close = difflib.get_close_matches(value, known, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else "write a region like 'us-east-1'"
    raise ValueError(f"unknown AWS region '{value}' (not in botocore's endpoint data); {hint}")


AwsRegion = Annotated[str, AfterValidator(check_aws_region)]


_KEY_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_key_prefix(value: str) -> str:
    """Letters, digits, '.', '_', '-': ACL key patterns (`trafficd redis acl`) start with it, so no ':', braces
    or glob characters."""
    if not _KEY_PREFIX_RE.match(value):
        raise ValueError(
            f"'{value}' cannot be a key prefix: use letters, digits, '.', '_' and '-' (no ':', '{{', '*' or "
            "spaces: Redis ACL key patterns start with it)"
        )
    return value


KeyPrefix = Annotated[str, AfterValidator(check_key_prefix)]


class Strict(BaseModel):
    # defer_build: a model's validator is built when first used, so importing this module builds none and the
    # first `Policy` validation builds one for the whole tree (not one per nested model, each holding copies of its
    # children): a few ms off every command's start. Model defaults are `X.model_construct()` (not `X()`, which
    # would build X at import); for defaults the two are the same instance: field defaults, no fields set.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, defer_build=True)
