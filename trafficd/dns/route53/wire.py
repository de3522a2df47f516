"""Route 53's wire format and limits: ResourceRecordSet dicts ⇄ `Record`, change batches (pure, no boto3).

A change batch never UPSERTs: each `Change(before, after)` becomes DELETE of `before` exactly as it was read
(when there was one) followed by CREATE of `after`. Route 53 applies a batch all or nothing, refuses a DELETE
that does not match the record exactly (weight, TTL, values) and a CREATE of a record that exists, so a batch
built on a stale read fails whole (`InvalidChangeBatch`): that is the fence (docs/route53.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from trafficd.dns import records as rec
from trafficd.model import Record

# Route 53's limits (ChangeResourceRecordSets): weights 0–255; per request at most 1,000 ResourceRecord
# elements and 32,000 characters in all Value elements (an UPSERT counts twice; we never send one). We also
# keep at most 100 changes per batch so one request stays small.
LIMITS = rec.Limits(max_weight=255, max_changes=100, max_values=1000, max_value_chars=32000)
MAX_WEIGHT = LIMITS.max_weight


def record_from_rrset(rrset: Mapping[str, Any]) -> Record:
    """A ResourceRecordSet dict as ListResourceRecordSets returns it → Record (normalized)."""
    rtype = str(rrset["Type"])
    alias = rrset.get("AliasTarget")
    weight = rrset.get("Weight")
    ttl = rrset.get("TTL")
    return Record(
        name=rec.normalize_name(str(rrset["Name"])),
        type=rtype,
        set_identifier=str(rrset.get("SetIdentifier", "")),
        weight=int(weight) if weight is not None else None,
        region=rrset.get("Region"),
        ttl=int(ttl) if ttl is not None else None,
        values=tuple(rec.normalize_value(rtype, str(v["Value"])) for v in rrset.get("ResourceRecords", [])),
        alias_target=rec.normalize_name(str(alias["DNSName"])) if alias else None,
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


def change_actions(changes: Sequence[rec.Change], zone_id: str) -> list[dict[str, Any]]:
    """DELETE each `before` as read (if any), then CREATE each `after`: the order Route 53 applies them in."""
    out: list[dict[str, Any]] = []
    for c in changes:
        if c.before is not None:
            out.append({"Action": "DELETE", "ResourceRecordSet": rrset_from_record(c.before, zone_id)})
        out.append({"Action": "CREATE", "ResourceRecordSet": rrset_from_record(c.after, zone_id)})
    return out


def change_batch(changes: Sequence[rec.Change], zone_id: str, comment: str = "trafficd") -> dict[str, Any]:
    """The ChangeBatch argument: DELETE + CREATE per change (never UPSERT)."""
    return {"Comment": comment[:256], "Changes": change_actions(changes, zone_id)}
