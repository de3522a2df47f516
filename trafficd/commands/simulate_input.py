"""Strict reading of `trafficd simulate` input lines: every bad line is a `file:line: field: problem` error.

Both formats are JSON lines. NaN, Infinity and numbers too large for a float are refused (the JSON text is parsed
without them), as are booleans where numbers belong, unknown fields (a misspelt field would otherwise be silently
ignored and the region look healthy), repeated keys, values out of range, and (probe level) the same probe twice.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from typing import Any

from trafficd.errors import TrafficdError
from trafficd.model import REASONS, Sample
from trafficd.policy.schema import Policy

SAMPLE_FIELDS = ("t", "region", "worker", "model", "ok", "reason", "total_ms", "ttft_ms")
SAMPLE_REQUIRED = ("t", "region", "worker", "model", "ok", "total_ms")
WINDOW_FIELDS = (
    "t", "region", "n", "p99_ms", "over_slo", "error_rate", "ttft_p99_ms", "ttft_over_slo",
    "recent_over", "recent_n", "stale", "unreadable", "headroom", "load_rps", "headroom_rps", "capacity",
)  # fmt: skip
CAPACITY_FIELDS = ("t", "region", "load_rps", "headroom_rps", "kv_usage")  # a probe-level file's capacity reading
CAPACITY_SOURCES = ("live", "stale", "missing")
MAX_RPS = 1e9
Reading = tuple[float, str, float, float | None, float | None]  # t, region, load_rps, headroom_rps, kv_usage
ACTION_FIELDS = ("t", "override", "region", "for", "reason", "force")
MAX_T = 1e10  # unix seconds (year 2286): anything larger is a unit mistake (ms?)
MAX_MS = 86_400_000.0  # one day


class InputError(TrafficdError, ValueError):
    """A line that cannot be used; the message names the file, the line and the field."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows; write a finite number")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"{k}: given twice in the same line")
        out[k] = v
    return out


def load_line(line: str) -> dict[str, Any]:
    """One JSON object, strictly (no NaN/Infinity, no repeated keys)."""
    try:
        d = json.loads(line, parse_constant=_no_constant, object_pairs_hook=_pairs)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(d, dict):
        raise ValueError("each line must be one JSON object")
    return d


def number(d: dict[str, Any], key: str, lo: float, hi: float, *, required: bool = True) -> float | None:
    """A finite number in [lo, hi] (booleans refused)."""
    if key not in d or d[key] is None:
        if required:
            raise ValueError(f"{key}: missing; give a number")
        return None
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"{key}: expected a number, got {json.dumps(v)}")
    f = float(v)
    if not math.isfinite(f):
        raise ValueError(f"{key}: {v} is not a finite number")
    if not lo <= f <= hi:
        raise ValueError(f"{key}: {f:g} is out of range; it must be between {lo:g} and {hi:g}")
    return f


def integer(d: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = d.get(key, 0)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{key}: expected a whole number, got {json.dumps(v)}")
    if not lo <= v <= hi:
        raise ValueError(f"{key}: {v} is out of range; it must be between {lo} and {hi}")
    return v


def flag(d: dict[str, Any], key: str) -> bool:
    v = d.get(key, False)
    if not isinstance(v, bool):
        raise ValueError(f"{key}: expected true or false, got {json.dumps(v)}")
    return v


def known_fields(d: dict[str, Any], allowed: Iterable[str], what: str) -> None:
    extra = sorted(set(d) - set(allowed))
    if extra:
        raise ValueError(f"{extra[0]}: unknown field in a {what} line; the fields are {', '.join(allowed)}")


def region_of(policy: Policy, d: dict[str, Any]) -> str:
    r = d.get("region")
    if not isinstance(r, str) or r not in policy.regions:
        raise ValueError(f"region: {json.dumps(r)} is not a region of the policy ({', '.join(policy.region_names)})")
    return r


def _text(d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v or len(v) > 200:
        raise ValueError(f"{key}: expected a non-empty name (a string), got {json.dumps(v)}")
    return v


def sample_of(policy: Policy, d: dict[str, Any]) -> Sample:
    """One probe line → a `Sample`, every field checked."""
    known_fields(d, SAMPLE_FIELDS, "sample")
    missing = [k for k in SAMPLE_REQUIRED if k not in d]
    if missing:
        raise ValueError(f"{missing[0]}: missing; a sample line has {', '.join(SAMPLE_REQUIRED)} (+ reason, ttft_ms)")
    t = number(d, "t", 0.0, MAX_T)
    total = number(d, "total_ms", 0.0, MAX_MS)
    assert t is not None and total is not None
    ok = flag(d, "ok")
    reason = d.get("reason")
    if ok and reason is not None:
        raise ValueError(f"reason: {json.dumps(reason)} on a successful probe; give null or leave it out")
    if not ok and reason not in REASONS:
        raise ValueError(f"reason: {json.dumps(reason)}; a failed probe needs one of {', '.join(REASONS)}")
    ttft = number(d, "ttft_ms", 0.0, total, required=False)
    return Sample(region_of(policy, d), _text(d, "worker"), _text(d, "model"), t, ok, reason, total, ttft)


def capacity_of(policy: Policy, d: dict[str, Any]) -> Reading:
    """A probe-level capacity line → (t, region, load_rps, headroom_rps, kv_usage): the region's live figures
    from then on (docs/capacity.md), stale once older than its `capacity.max_age`."""
    known_fields(d, CAPACITY_FIELDS, "capacity")
    t = number(d, "t", 0.0, MAX_T)
    load = number(d, "load_rps", 0.0, MAX_RPS)
    assert t is not None and load is not None
    room = number(d, "headroom_rps", 0.0, MAX_RPS, required=False)
    return t, region_of(policy, d), load, room, number(d, "kv_usage", 0.0, 1.0, required=False)


def read_samples(
    policy: Policy,
    lines: Iterable[str],
    path: str,
    capacity: list[Reading] | None = None,
) -> list[Sample]:
    """Every sample of a probe-level file; the first bad line raises `InputError` naming file:line. Lines with
    `load_rps` and no `worker` are capacity readings, appended to `capacity` when given."""
    out: list[Sample] = []
    seen: dict[tuple[float, str, str, str], int] = {}
    for no, d in numbered(lines, path):
        try:
            if capacity is not None and "load_rps" in d and "worker" not in d:
                capacity.append(capacity_of(policy, d))
                continue
            s = sample_of(policy, d)
            key = (s.t, s.region, s.worker, s.model)
            if key in seen:
                raise ValueError(f"t: the same probe (t, region, worker, model) as line {seen[key]}; drop one")
            seen[key] = no
        except ValueError as exc:
            raise InputError(f"{path}:{no}: {exc}") from None
        out.append(s)
    return out


def numbered(lines: Iterable[str], path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank, non-comment line."""
    for no, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            yield no, load_line(line)
        except ValueError as exc:
            raise InputError(f"{path}:{no}: {exc}") from None
