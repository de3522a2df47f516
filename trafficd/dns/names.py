"""Names, values and records as trafficd compares and logs them (pure): one spelling for everything read."""

from __future__ import annotations

import ipaddress
from typing import Any

from trafficd.model import Record

Key = tuple[str, str, str]  # (name, type, set_identifier), as Record.key


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


def key_text(key: Key) -> str:
    return f"{key[0]} {key[1]} {key[2]}".rstrip()
