"""How a traffic matrix is laid out in DNS records: one strategy object per topology (pure).

Every place that depends on the topology asks the object `topology_for(policy)` returns, instead of testing
`policy.dns.topology` itself: the desired records, the matrix the records express, each region's own weight,
the `dns show` view and what an authoritative answer may be (verification).

* `LatencyWeighted` (default): per region R a latency alias `dns.record_name` (SetIdentifier setid(R), Region =
  R's aws_region) → R's pool (`dns.pool_name`), which holds one weighted member per destination D,
  SetIdentifier `{setid(R)}-to-{setid(D)}`, weight round(max_weight × matrix[R][D]). The pool always holds
  members for R itself and R's `neighbours` (every region when R declares none): R × (k + 1) records, not R².
  A destination the planner uses beyond them (its last resort: every other region) gets a member when the
  matrix first gives it a positive share; once created, a member stays (weight 0 when unused), so an existing
  record is only ever replaced, never deleted.
* `Weighted`: one weighted record per region D under `dns.record_name` (SetIdentifier setid(D)), weight ∝ the
  column sum of the matrix (the share of all users sent to D), scaled so the largest is max_weight.

A row with no positive entry (or a region missing from the matrix) produces no records: the current ones hold.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar, Protocol

from trafficd.dns.names import Key, normalize_name, normalize_value, record_to_log
from trafficd.model import Record, TrafficMatrix
from trafficd.policy.schema import Policy


def pool_name(policy: Policy, region: str) -> str:
    """R's weighted pool, from the `dns.pool_name` template (`{region}`, `{record}` without trailing dot)."""
    record = normalize_name(policy.dns.record_name).rstrip(".")
    return normalize_name(policy.dns.pool_name.format(region=region, record=record))


def member_set_identifier(policy: Policy, src: str, dst: str) -> str:
    """SetIdentifier of D's member in R's pool: `{setid(R)}-to-{setid(D)}`."""
    return f"{policy.set_identifier(src)}-to-{policy.set_identifier(dst)}"


def pool_members(policy: Policy, region: str) -> list[str]:
    """The destinations R's pool always holds, in policy order: R and its neighbours (every region if none)."""
    listed = set(policy.regions[region].neighbours)
    if not listed:
        return list(policy.region_names)
    return [d for d in policy.region_names if d == region or d in listed]


def clean_share(fraction: float) -> float:
    return 0.0 if math.isnan(fraction) else min(max(fraction, 0.0), 1.0)


def scaled_weights(shares: Sequence[float], max_weight: int, scale: float = 1.0) -> list[int] | None:
    """round(max_weight × share / scale) each, never all zero; None when no share is positive (hold)."""
    clean = [clean_share(s / scale) if scale > 0 else 0.0 for s in shares]
    if not any(c > 0 for c in clean):
        return None
    weights = [min(max_weight, math.floor(max_weight * c + 0.5)) for c in clean]
    if not any(weights):
        weights[max(range(len(clean)), key=lambda i: clean[i])] = 1
    return weights


def _shares(records: Sequence[Record | None], regions: Sequence[str]) -> dict[str, float] | None:
    total = sum((r.weight or 0) for r in records if r is not None)
    if total <= 0:
        return None
    return {d: ((r.weight or 0) / total if r else 0.0) for d, r in zip(regions, records, strict=True)}


class Topology(Protocol):
    name: ClassVar[str]

    def desired(self, matrix: TrafficMatrix, max_weight: int, existing: Collection[Key] = ()) -> list[Record]:
        """The records the matrix asks for, in a stable order (targets before the aliases pointing at them);
        `existing` (the owned keys in the zone now) keeps a member created earlier in the layout."""
        ...

    def matrix(self, by_key: Mapping[Key, Record]) -> TrafficMatrix:
        """The matrix the owned records express (rows missing where records are absent or all zero)."""
        ...

    def own_key(self, region: str) -> Key:
        """The record whose weight says how much of its own users a region serves."""
        ...

    def view(self, by_key: Mapping[Key, Record]) -> dict[str, Any]:
        """Per region, what `trafficd dns show` prints."""
        ...

    def describe(self, region: str, view: Mapping[str, Any]) -> list[str]:
        """`dns show` lines for one region's view."""
        ...

    def alias_answers(self, mine: Sequence[Record], allowed: Mapping[str, set[str]]) -> dict[str, set[str]]:
        """Names answered through an alias, with the values they may carry (verification)."""
        ...


class _Base:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.rtype = policy.dns.record_type
        self.api = normalize_name(policy.dns.record_name)
        self.regions = policy.region_names

    def endpoint(self, region: str) -> str:
        return normalize_value(self.rtype, self.policy.regions[region].dns.endpoint)

    def weighted(self, name: str, setid: str, weight: int, dst: str) -> Record:
        return Record(name, self.rtype, setid, weight=weight, ttl=self.policy.dns.ttl, values=(self.endpoint(dst),))


def _pct(share: float | None) -> str:
    return "   -  " if share is None else f"{share * 100:5.1f}%"


def _weight_line(weight: int, share: float | None, values: Sequence[str]) -> str:
    return f"weight {weight:>3}  share {_pct(share)}  → {', '.join(values)}"


class LatencyWeighted(_Base):
    name: ClassVar[str] = "latency-weighted"

    def layout(self, region: str, row: Mapping[str, float] | None, existing: Collection[Key]) -> list[str]:
        """R's pool members: R and its neighbours, every destination `row` gives a share, every member in the zone."""
        base = set(pool_members(self.policy, region))
        pool = pool_name(self.policy, region)

        def wanted(d: str) -> bool:
            if d in base or clean_share((row or {}).get(d, 0.0)) > 0:
                return True
            return (pool, self.rtype, member_set_identifier(self.policy, region, d)) in existing

        return [d for d in self.regions if wanted(d)]

    def desired(self, matrix: TrafficMatrix, max_weight: int, existing: Collection[Key] = ()) -> list[Record]:
        out: list[Record] = []
        aliases = []
        for r in self.regions:
            row = matrix.get(r)
            dests = self.layout(r, row, existing)
            weights = scaled_weights([row.get(d, 0.0) for d in dests], max_weight) if row is not None else None
            pool = pool_name(self.policy, r)
            if weights is not None:
                for d, w in zip(dests, weights, strict=True):
                    out.append(self.weighted(pool, member_set_identifier(self.policy, r, d), w, d))
            region = self.policy.regions[r].dns.aws_region
            setid = self.policy.set_identifier(r)
            aliases.append(Record(self.api, self.rtype, setid, region=region, alias_target=pool))
        return out + aliases

    def members(self, region: str, by_key: Mapping[Key, Record]) -> list[Record | None]:
        pool = pool_name(self.policy, region)
        return [by_key.get((pool, self.rtype, member_set_identifier(self.policy, region, d))) for d in self.regions]

    def matrix(self, by_key: Mapping[Key, Record]) -> TrafficMatrix:
        out: TrafficMatrix = {}
        for r in self.regions:
            row = _shares(self.members(r, by_key), self.regions)
            if row is not None:
                out[r] = row
        return out

    def own_key(self, region: str) -> Key:
        return (pool_name(self.policy, region), self.rtype, member_set_identifier(self.policy, region, region))

    def view(self, by_key: Mapping[Key, Record]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for r in self.regions:
            base = set(pool_members(self.policy, r))
            members = {
                d: m for d, m in zip(self.regions, self.members(r, by_key), strict=True) if d in base or m is not None
            }
            total = sum(m.weight or 0 for m in members.values() if m)
            out[r] = {
                "latency": record_to_log(by_key.get((self.api, self.rtype, self.policy.set_identifier(r)))),
                "pool": pool_name(self.policy, r),
                "members": {
                    d: None
                    if m is None
                    else {
                        "weight": m.weight,
                        "share": round((m.weight or 0) / total, 4) if total else None,
                        "values": list(m.values),
                    }
                    for d, m in members.items()
                },
            }
        return out

    def describe(self, region: str, view: Mapping[str, Any]) -> list[str]:
        lat = view["latency"]
        head = "latency record ABSENT" if lat is None else f"latency {lat['region']} → {lat['alias_target']}"
        lines = [f"  {region:<16} {head}"]
        for dst, m in view["members"].items():
            what = "ABSENT" if m is None else _weight_line(m["weight"], m["share"], m["values"])
            lines.append(f"      to {dst:<13} {what}")
        return lines

    def alias_answers(self, mine: Sequence[Record], allowed: Mapping[str, set[str]]) -> dict[str, set[str]]:
        pools = {r.alias_target for r in mine if r.name == self.api and r.alias_target}
        return {self.api: set().union(*(allowed.get(p, set()) for p in pools)) if pools else set()}


class Weighted(_Base):
    name: ClassVar[str] = "weighted"

    def desired(self, matrix: TrafficMatrix, max_weight: int, existing: Collection[Key] = ()) -> list[Record]:
        columns = [sum(clean_share(matrix[r].get(d, 0.0)) for r in self.regions if r in matrix) for d in self.regions]
        weights = scaled_weights(columns, max_weight, max(columns, default=0.0))
        if weights is None:
            return []
        return [
            self.weighted(self.api, self.policy.set_identifier(d), w, d)
            for d, w in zip(self.regions, weights, strict=True)
        ]

    def matrix(self, by_key: Mapping[Key, Record]) -> TrafficMatrix:
        row = _shares([by_key.get(self.own_key(d)) for d in self.regions], self.regions)
        return {} if row is None else {r: dict(row) for r in self.regions}

    def own_key(self, region: str) -> Key:
        return (self.api, self.rtype, self.policy.set_identifier(region))

    def view(self, by_key: Mapping[Key, Record]) -> dict[str, Any]:
        records = {r: by_key.get(self.own_key(r)) for r in self.regions}
        total = sum(x.weight or 0 for x in records.values() if x)
        return {
            r: {
                "record": record_to_log(x),
                "share": round(x.weight / total, 4) if x and x.weight is not None and total else None,
            }
            for r, x in records.items()
        }

    def describe(self, region: str, view: Mapping[str, Any]) -> list[str]:
        r = view["record"]
        what = "ABSENT" if r is None else _weight_line(r["weight"], view["share"], r["values"])
        return [f"  {region:<16} {what}"]

    def alias_answers(self, mine: Sequence[Record], allowed: Mapping[str, set[str]]) -> dict[str, set[str]]:
        return {}


TOPOLOGIES: dict[str, type[LatencyWeighted] | type[Weighted]] = {
    LatencyWeighted.name: LatencyWeighted,
    Weighted.name: Weighted,
}


def topology_for(policy: Policy) -> Topology:
    """The strategy object for the policy's `dns.topology`."""
    return TOPOLOGIES[policy.dns.topology](policy)
