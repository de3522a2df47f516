"""What Route 53 checks in a change batch, on the XML as sent (the test proxy's rules, `route53_proxy.py`).

- `parse_rrset`: a ResourceRecordSet element → the fields Route 53 compares, normalized (`dns/names.py`).
- `judge_batch`: the batch's changes in order on a copy of the zone: a DELETE must match an existing record
  exactly (weight, region, TTL, values, alias), a CREATE must not find one; every refusal in Route 53's words.
- `epochs`: the writer epoch a batch creates and the one it deletes (the TXT record of `dns/fence.py`).

Pure: no HTTP, no moto; the proxy applies what these accept.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from trafficd.dns.fence import EPOCH_PREFIX
from trafficd.dns.names import normalize_name, normalize_value

RecordKey = tuple[str, str, str]  # (name, type, set identifier)
_EPOCH = re.compile(r'"?' + re.escape(EPOCH_PREFIX) + r'(\d+)"?')


def strip_ns(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def xml_text(node: ET.Element, name: str) -> str | None:
    for child in node:
        if strip_ns(child.tag) == name:
            return child.text or ""
    return None


def xml_child(node: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in node if strip_ns(c.tag) == name), None)


def parse_rrset(node: ET.Element) -> dict[str, Any]:
    """A ResourceRecordSet element → the fields Route 53 compares (normalized), plus the raw XML."""
    rtype = xml_text(node, "Type") or ""
    values_node = xml_child(node, "ResourceRecords")
    values = [] if values_node is None else [xml_text(v, "Value") or "" for v in values_node]
    alias = xml_child(node, "AliasTarget")
    ttl, weight = xml_text(node, "TTL"), xml_text(node, "Weight")
    return {
        "name": normalize_name(xml_text(node, "Name") or ""),
        "type": rtype,
        "set_identifier": xml_text(node, "SetIdentifier") or "",
        "weight": int(weight) if weight is not None else None,
        "region": xml_text(node, "Region"),
        "ttl": int(ttl) if ttl is not None else None,
        "values": sorted(normalize_value(rtype, v) for v in values),
        "alias_target": normalize_name(xml_text(alias, "DNSName") or "") if alias is not None else None,
        "xml": ET.tostring(node, encoding="unicode"),
    }


def record_key(r: dict[str, Any]) -> RecordKey:
    return (r["name"], r["type"], r["set_identifier"])


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    fields = ("weight", "region", "ttl", "values", "alias_target")
    return all(a[f] == b[f] for f in fields)


def _describe(r: dict[str, Any]) -> str:
    sid = f", set-identifier='{r['set_identifier']}'" if r["set_identifier"] else ""
    return f"[name='{r['name']}', type='{r['type']}'{sid}]"


def judge_batch(zone: dict[RecordKey, dict[str, Any]], changes: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Route 53's checks, in order, on a copy of the zone: the messages of every change it would refuse."""
    state = dict(zone)
    problems = []
    for action, r in changes:
        k = record_key(r)
        if action == "DELETE":
            if k not in state:
                problems.append(f"Tried to delete resource record set {_describe(r)} but it was not found")
            elif not _same(state[k], r):
                problems.append(
                    f"Tried to delete resource record set {_describe(r)} but the values provided do not match "
                    "the current values"
                )
            else:
                del state[k]
        elif action == "CREATE":
            if k in state:
                problems.append(f"Tried to create resource record set {_describe(r)} but it already exists")
            else:
                state[k] = r
        else:  # UPSERT
            state[k] = r
    return problems


def epochs(changes: list[tuple[str, dict[str, Any]]]) -> tuple[int | None, int | None]:
    created = deleted = None
    for action, r in changes:
        if r["type"] == "TXT" and len(r["values"]) == 1 and (m := _EPOCH.fullmatch(r["values"][0])):
            if action == "DELETE":
                deleted = int(m.group(1))
            else:
                created = int(m.group(1))
    return created, deleted
