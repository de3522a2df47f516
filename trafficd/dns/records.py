"""Route 53 records as pure data: desired records from a traffic matrix, the diff, batch validation, drift.

No boto3 here: the Route 53 adapter (`route53.py`) lists the zone, converts each resource record set with
`record_from_rrset`, calls `plan(...)`, and sends `change_batch(...)`. Everything in this module is a pure
function of its arguments, so reconcile is testable (and idempotent) without a network.

Topologies (DESIGN §6), for regions R, D with set identifiers setid(R), setid(D):

* latency-weighted (default): per R a latency alias record `dns.record_name` (SetIdentifier setid(R),
  Region = R's aws_region) → R's pool `dns.pool_name` (e.g. `us-east.pool.api.example.com.`, same zone,
  EvaluateTargetHealth false). The pool holds one weighted member per destination D, SetIdentifier
  `{setid(R)}-to-{setid(D)}`, value D's endpoint, weight round(255 × matrix[R][D]).
* weighted: one weighted record per region D under `dns.record_name` (SetIdentifier setid(D)), weight ∝ the
  column sum of the matrix (the share of all users sent to D), scaled so the largest is 255.

A row (or the whole matrix) that has no positive entry is not turned into records at all: the current
records hold. A row whose entries are positive but all round to 0 gives its largest entry weight 1, so
weights within one name are never all zero.

Only *owned* records — the (name, type, SetIdentifier) keys above — are ever read as ours or changed; the
plan only UPSERTs, never DELETEs.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trafficd.model import Record, TrafficMatrix
from trafficd.policy.schema import Policy

MAX_WEIGHT = 255
MAX_CHANGES = 100  # per ChangeResourceRecordSets batch (Route 53 allows more; we keep batches small)

Key = tuple[str, str, str]  # (name, type, set_identifier), as Record.key


# ---------------------------------------------------------------- names and values


def normalize_name(name: str) -> str:
    """Lower case, with a trailing dot (Route 53 answers `api.example.com.`)."""
    name = name.strip().lower()
    return name if name.endswith(".") else name + "."


def normalize_value(rtype: str, value: str) -> str:
    """CNAME targets as normalized names; A/AAAA addresses in canonical form; anything else as given."""
    value = value.strip()
    if rtype == "CNAME":
        return normalize_name(value)
    if rtype in ("A", "AAAA"):
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            return value
    return value


def pool_name(policy: Policy, region: str) -> str:
    """R's weighted pool, from the `dns.pool_name` template (`{region}`, `{record}` without trailing dot)."""
    record = normalize_name(policy.dns.record_name).rstrip(".")
    return normalize_name(policy.dns.pool_name.format(region=region, record=record))


def member_set_identifier(policy: Policy, src: str, dst: str) -> str:
    """SetIdentifier of D's member in R's pool: `{setid(R)}-to-{setid(D)}`."""
    return f"{policy.set_identifier(src)}-to-{policy.set_identifier(dst)}"


def routing_kind(record: Record) -> str:
    """weighted, latency, simple (no SetIdentifier) or other (failover, geolocation…, not modelled)."""
    if not record.set_identifier:
        return "simple"
    if record.weight is not None:
        return "weighted"
    if record.region is not None:
        return "latency"
    return "other"


# ---------------------------------------------------------------- weights


def _clean(fraction: float) -> float:
    return 0.0 if math.isnan(fraction) else min(max(fraction, 0.0), 1.0)


def scaled_weights(shares: Sequence[float], scale: float = 1.0) -> list[int] | None:
    """round(255 × share / scale) each, never all zero; None when no share is positive (hold)."""
    clean = [_clean(s / scale) if scale > 0 else 0.0 for s in shares]
    if not any(c > 0 for c in clean):
        return None
    weights = [min(MAX_WEIGHT, math.floor(MAX_WEIGHT * c + 0.5)) for c in clean]
    if not any(weights):
        weights[max(range(len(clean)), key=lambda i: clean[i])] = 1
    return weights


# ---------------------------------------------------------------- desired records


def owned_keys(policy: Policy) -> frozenset[Key]:
    """Every (name, type, SetIdentifier) the policy declares: the only records trafficd reads as its own."""
    return frozenset(r.key for r in _shape(policy))


def _shape(policy: Policy) -> list[Record]:
    """Owned records with identity weights (each region serves its own users)."""
    regions = policy.region_names
    matrix = {r: {d: 1.0 if d == r else 0.0 for d in regions} for r in regions}
    return desired_records(policy, matrix)


def desired_records(policy: Policy, matrix: TrafficMatrix) -> list[Record]:
    """The records the matrix asks for, in a stable order (pool members before the alias records)."""
    dns = policy.dns
    rtype = dns.record_type
    name = normalize_name(dns.record_name)
    regions = policy.region_names
    endpoint = {d: normalize_value(rtype, policy.regions[d].dns.endpoint) for d in regions}
    out: list[Record] = []
    if dns.topology == "weighted":
        columns = [sum(_clean(matrix[r].get(d, 0.0)) for r in regions if r in matrix) for d in regions]
        weights = scaled_weights(columns, max(columns, default=0.0))
        if weights is None:
            return []
        for d, w in zip(regions, weights, strict=True):
            out.append(Record(name, rtype, policy.set_identifier(d), weight=w, ttl=dns.ttl, values=(endpoint[d],)))
        return out
    aliases = []
    for r in regions:
        row = matrix.get(r)
        weights = scaled_weights([row.get(d, 0.0) for d in regions]) if row is not None else None
        if weights is not None:
            pool = pool_name(policy, r)
            for d, w in zip(regions, weights, strict=True):
                sid = member_set_identifier(policy, r, d)
                out.append(Record(pool, rtype, sid, weight=w, ttl=dns.ttl, values=(endpoint[d],)))
        aliases.append(
            Record(
                name,
                rtype,
                policy.set_identifier(r),
                region=policy.regions[r].dns.aws_region,
                alias_target=pool_name(policy, r),
            )
        )
    return out + aliases


def matrix_from_records(policy: Policy, records: Iterable[Record]) -> TrafficMatrix:
    """The matrix the owned records express now (rows missing when their pool is absent or all zero).

    For the plain weighted topology only the column shares exist, so every row is the same.
    """
    regions = policy.region_names
    by_key = {r.key: r for r in records}
    rtype = policy.dns.record_type
    out: TrafficMatrix = {}
    if policy.dns.topology == "weighted":
        name = normalize_name(policy.dns.record_name)
        ws = [by_key.get((name, rtype, policy.set_identifier(d))) for d in regions]
        total = sum((w.weight or 0) for w in ws if w is not None)
        if total > 0:
            row = {d: ((w.weight or 0) / total if w else 0.0) for d, w in zip(regions, ws, strict=True)}
            out = {r: dict(row) for r in regions}
        return out
    for r in regions:
        pool = pool_name(policy, r)
        ms = [by_key.get((pool, rtype, member_set_identifier(policy, r, d))) for d in regions]
        total = sum((m.weight or 0) for m in ms if m is not None)
        if total > 0:
            out[r] = {d: ((m.weight or 0) / total if m else 0.0) for d, m in zip(regions, ms, strict=True)}
    return out


def own_weights(policy: Policy, records: Iterable[Record]) -> dict[str, int | None]:
    """Each region's weight for serving its own users (None: record absent).

    Latency-weighted: the weight of the region's own member in its pool; weighted: its record's weight.
    """
    by_key = {r.key: r for r in records}
    rtype = policy.dns.record_type
    out: dict[str, int | None] = {}
    for region in policy.region_names:
        if policy.dns.topology == "latency-weighted":
            key = (pool_name(policy, region), rtype, member_set_identifier(policy, region, region))
        else:
            key = (normalize_name(policy.dns.record_name), rtype, policy.set_identifier(region))
        found = by_key.get(key)
        out[region] = None if found is None else found.weight
    return out


# ---------------------------------------------------------------- diff, drift, validation


@dataclass(frozen=True, slots=True)
class Change:
    """One UPSERT: `before` is the owned record as listed (None when absent), `after` what we write."""

    before: Record | None
    after: Record

    def to_log(self) -> dict[str, Any]:
        return {
            "key": "/".join(self.after.key),
            "before": record_to_log(self.before),
            "after": record_to_log(self.after),
        }


@dataclass(frozen=True, slots=True)
class Drift:
    """An owned record someone else changed: what we last wrote or saw (`before`), what is there now."""

    key: Key
    before: Record | None
    after: Record | None

    def to_log(self) -> dict[str, Any]:
        return {"key": "/".join(self.key), "before": record_to_log(self.before), "after": record_to_log(self.after)}


@dataclass(frozen=True, slots=True)
class Plan:
    """The changes of one batch, the problems that forbid sending it, and how many wait for the next cycle."""

    changes: tuple[Change, ...]
    problems: tuple[str, ...] = ()
    deferred: int = 0
    respected: tuple[Key, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems


def diff(desired: Iterable[Record], actual: Mapping[Key, Record]) -> list[Change]:
    """UPSERT every desired record that is absent or different; never a DELETE."""
    return [Change(actual.get(d.key), d) for d in desired if actual.get(d.key) != d]


def detect_drift(expected: Mapping[Key, Record | None], actual: Mapping[Key, Record]) -> list[Drift]:
    """Owned records that differ from what we last wrote or saw (`expected`; keys we know nothing of are skipped)."""
    return [Drift(k, before, actual.get(k)) for k, before in expected.items() if actual.get(k) != before]


def validate(changes: Sequence[Change], zone: Iterable[Record]) -> list[str]:
    """What Route 53 would reject (or what we refuse) in this batch, judged on the zone as it would be after it."""
    problems: list[str] = []
    if len(changes) > MAX_CHANGES:
        problems.append(f"{len(changes)} changes in one batch (at most {MAX_CHANGES})")
    seen: set[Key] = set()
    for c in changes:
        a = c.after
        if a.key in seen:
            problems.append(f"{_k(a.key)}: changed twice in one batch (SetIdentifiers must be unique)")
        seen.add(a.key)
        if a.weight is not None and not (isinstance(a.weight, int) and 0 <= a.weight <= MAX_WEIGHT):
            problems.append(f"{_k(a.key)}: weight {a.weight!r} is not an integer in 0–{MAX_WEIGHT}")
        if a.weight is not None and a.region is not None:
            problems.append(f"{_k(a.key)}: both weighted and latency routing")
        if a.alias_target is None and (a.ttl is None or not a.values):
            problems.append(f"{_k(a.key)}: a record that is not an alias needs a TTL and values")
    final = {r.key: r for r in zone}
    final.update({c.after.key: c.after for c in changes})
    touched = {c.after.name for c in changes}
    by_name: dict[str, list[Record]] = {}
    for r in final.values():
        if r.name in touched:
            by_name.setdefault(r.name, []).append(r)
    for name, recs in sorted(by_name.items()):
        types = {r.type for r in recs}
        if "CNAME" in types and len(types) > 1:
            problems.append(f"{name}: CNAME beside other types ({', '.join(sorted(types - {'CNAME'}))})")
        for rtype in sorted(types):
            group = [r for r in recs if r.type == rtype]
            kinds = sorted({routing_kind(r) for r in group})
            if len(kinds) > 1:
                problems.append(f"{name} {rtype}: mixed routing types ({', '.join(kinds)})")
            if kinds == ["weighted"] and sum(r.weight or 0 for r in group) == 0:
                problems.append(f"{name} {rtype}: every weight would be zero")
    for c in changes:
        target = c.after.alias_target
        if target is not None and not any(r.name == target and r.type == c.after.type for r in final.values()):
            problems.append(f"{_k(c.after.key)}: alias target {target} {c.after.type} does not exist in the zone")
    return problems


def plan(
    policy: Policy,
    matrix: TrafficMatrix,
    zone: Sequence[Record],
    *,
    respected: Iterable[Key] = (),
    max_changes: int = MAX_CHANGES,
) -> Plan:
    """Desired vs the owned records in `zone` → one validated batch of at most `max_changes` UPSERTs.

    `zone` is every record listed (owned or not: the validation needs the neighbours). Keys in `respected`
    (drift the policy respects) are left as they are. When more changes are needed than fit, whole names are
    taken in order (pools before aliases, so no pool is ever half-written) and the rest is `deferred`.
    """
    owned = owned_keys(policy)
    actual = {r.key: r for r in zone if r.key in owned}
    skip = set(respected)
    changes = [c for c in diff(desired_records(policy, matrix), actual) if c.after.key not in skip]
    batch: list[Change] = []
    names: list[str] = []
    for c in changes:
        if c.after.name not in names:
            names.append(c.after.name)
    for n in names:
        group = [c for c in changes if c.after.name == n]
        if batch and len(batch) + len(group) > max_changes:
            break
        batch.extend(group)
    problems = validate(batch, zone)
    return Plan(tuple(batch), tuple(problems), len(changes) - len(batch), tuple(sorted(skip)))


def _k(key: Key) -> str:
    return f"{key[0]} {key[1]} {key[2]}".rstrip()


# ---------------------------------------------------------------- boto3 dict conversion


def record_from_rrset(rrset: Mapping[str, Any]) -> Record:
    """A ResourceRecordSet dict as ListResourceRecordSets returns it → Record (normalized)."""
    rtype = str(rrset["Type"])
    alias = rrset.get("AliasTarget")
    weight = rrset.get("Weight")
    ttl = rrset.get("TTL")
    return Record(
        name=normalize_name(str(rrset["Name"])),
        type=rtype,
        set_identifier=str(rrset.get("SetIdentifier", "")),
        weight=int(weight) if weight is not None else None,
        region=rrset.get("Region"),
        ttl=int(ttl) if ttl is not None else None,
        values=tuple(normalize_value(rtype, str(v["Value"])) for v in rrset.get("ResourceRecords", [])),
        alias_target=normalize_name(str(alias["DNSName"])) if alias else None,
    )


def rrset_from_record(record: Record, zone_id: str) -> dict[str, Any]:
    """Record → ResourceRecordSet dict for ChangeResourceRecordSets (alias targets in the same zone)."""
    out: dict[str, Any] = {"Name": record.name, "Type": record.type}
    if record.set_identifier:
        out["SetIdentifier"] = record.set_identifier
    if record.weight is not None:
        out["Weight"] = record.weight
    if record.region is not None:
        out["Region"] = record.region
    if record.alias_target is not None:
        out["AliasTarget"] = {
            "HostedZoneId": zone_id,
            "DNSName": record.alias_target,
            "EvaluateTargetHealth": False,
        }
    else:
        out["TTL"] = record.ttl
        out["ResourceRecords"] = [{"Value": v} for v in record.values]
    return out


def change_batch(changes: Sequence[Change], zone_id: str, comment: str = "trafficd") -> dict[str, Any]:
    """The ChangeBatch argument: UPSERT only."""
    return {
        "Comment": comment[:256],
        "Changes": [{"Action": "UPSERT", "ResourceRecordSet": rrset_from_record(c.after, zone_id)} for c in changes],
    }


def record_to_log(record: Record | None) -> dict[str, Any] | None:
    """A compact dict of the fields that matter, for log events."""
    if record is None:
        return None
    out: dict[str, Any] = {"name": record.name, "type": record.type, "set_identifier": record.set_identifier}
    for k in ("weight", "region", "ttl", "alias_target"):
        v = getattr(record, k)
        if v is not None:
            out[k] = v
    if record.values:
        out["values"] = list(record.values)
    return out
