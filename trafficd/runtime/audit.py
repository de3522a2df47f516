"""The audit stream: what the controller decided and did, kept in Redis for `trafficd history`.

One Redis stream per service (`keys.audit_key`), one entry per notable fact, its body one JSON object under
field `e`. Kinds:

    decision   a region's serving ratio or state changed: states, ratios, rule, guards, reasons, evidence
    guard      a guard started or stopped changing the plan (fail open, freeze, cooldown, max_drained, …)
    override   a manual drain/undrain/freeze came into force or ended, as the controller saw it
    route53    a change batch applied, refused, failed, or stuck pending: change id, records, cause
    plan_held  Route 53 did not take a changed plan, so the state was not advanced

Every entry has `at` (unix s), `kind`, `evaluation_id`, `policy_hash`, `regions` and `summary` (one human line).
The stream is capped by count (`XADD MAXLEN ~ MAX_ENTRIES`) and by age (`XTRIM MINID ~` now − `MAX_AGE_S`), so it
never grows without bound; an idle controller writes nothing to it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from trafficd.keys import audit_key, leader_report_key

MAX_ENTRIES = 20_000
MAX_AGE_S = 14 * 86_400.0
KINDS = ("decision", "guard", "override", "route53", "plan_held")


@dataclass(frozen=True, slots=True)
class Entry:
    """One audit fact (see the module docstring for the kinds)."""

    kind: str
    at: float
    evaluation_id: str | None
    policy_hash: str | None
    regions: tuple[str, ...]
    summary: str
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "at": self.at,
            "evaluation_id": self.evaluation_id,
            "policy_hash": self.policy_hash,
            "regions": list(self.regions),
            "summary": self.summary,
            **self.detail,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Entry:
        base = {"kind", "at", "evaluation_id", "policy_hash", "regions", "summary"}
        return cls(
            kind=str(d.get("kind", "")),
            at=float(d.get("at", 0.0)),
            evaluation_id=d.get("evaluation_id"),
            policy_hash=d.get("policy_hash"),
            regions=tuple(d.get("regions") or ()),
            summary=str(d.get("summary", "")),
            detail={k: v for k, v in d.items() if k not in base},
        )


async def record(
    client: Any,
    prefix: str,
    service: str,
    entries: Iterable[Entry],
    *,
    now: float | None = None,
    max_entries: int = MAX_ENTRIES,
    max_age_s: float = MAX_AGE_S,
) -> int:
    """Append `entries` (one pipeline) and trim the stream by count and age; returns how many were written."""
    batch = list(entries)
    if not batch:
        return 0
    key = audit_key(prefix, service)
    now = time.time() if now is None else now
    pipe = client.pipeline(transaction=False)
    for entry in batch:
        body = json.dumps(entry.to_dict(), separators=(",", ":"), default=str)
        pipe.xadd(key, {"e": body}, maxlen=max_entries, approximate=True)
    pipe.xtrim(key, minid=str(int((now - max_age_s) * 1000)), approximate=True)
    await pipe.execute()
    return len(batch)


async def read(
    client: Any,
    prefix: str,
    service: str,
    *,
    since: float,
    until: float | None = None,
    region: str | None = None,
    kinds: Iterable[str] | None = None,
) -> list[Entry]:
    """Entries written at or after `since` (unix s), oldest first, optionally of one region or some kinds."""
    key = audit_key(prefix, service)
    top = "+" if until is None else str(int(until * 1000))
    wanted = set(kinds) if kinds is not None else None
    out: list[Entry] = []
    for _, fields in await client.xrange(key, min=str(int(since * 1000)), max=top):
        raw = fields.get(b"e") or fields.get("e")
        if raw is None:
            continue
        try:
            entry = Entry.from_dict(json.loads(raw))
        except (ValueError, TypeError):
            continue  # a foreign or damaged entry is skipped, never fatal for on-call
        if region is not None and entry.regions and region not in entry.regions:
            continue
        if wanted is not None and entry.kind not in wanted:
            continue
        out.append(entry)
    return out


LAST_EVALUATION_TTL_S = 86_400


async def record_last_evaluation(client: Any, prefix: str, service: str, info: dict[str, Any]) -> None:
    """The leader's last evaluation (id, policy hash, dry-run, time), overwritten each time, for `trafficd status`."""
    body = json.dumps(info, separators=(",", ":"), default=str)
    await client.set(leader_report_key(prefix, service), body, ex=LAST_EVALUATION_TTL_S)


async def read_last_evaluation(client: Any, prefix: str, service: str) -> dict[str, Any] | None:
    raw = await client.get(leader_report_key(prefix, service))
    if raw is None:
        return None
    try:
        info = json.loads(raw)
    except ValueError:
        return None
    return info if isinstance(info, dict) else None
