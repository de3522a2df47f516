"""After a change is INSYNC, ask the zone's authoritative name servers what they answer (dnspython).

Weighted answers are random per query, so one query cannot confirm a weight; what it can confirm is that
each server answers, and with an endpoint the records allow: a member with weight > 0 of that pool (or, for
the latency record, of any pool: the answer depends on where the asking resolver is). A drained endpoint in
an answer, or no answer, is logged as `ok: false`. Verification only reports; it never changes records.

The servers are the zone apex's NS records (from the listing the reconciler already has: no extra API call
or IAM permission), resolved with the system resolver, or `host[:port]` entries given to the Reconciler
(tests, split-horizon set-ups).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import dns.resolver

from trafficd.dns import records as rec
from trafficd.dns.topology import topology_for
from trafficd.model import Record
from trafficd.policy.schema import Policy
from trafficd.runtime.logs import get_logger

log = get_logger("route53")


def expected_answers(policy: Policy, zone: Sequence[Record]) -> dict[str, set[str]]:
    """Per owned name worth asking: the values an authoritative answer may carry (pure)."""
    owned = rec.owned_keys(policy)
    mine = [r for r in zone if r.key in owned]
    allowed: dict[str, set[str]] = {}
    for name in sorted({r.name for r in mine if r.weight is not None}):
        members = [r for r in mine if r.name == name and r.weight is not None]
        positive = [r for r in members if r.weight] or members  # all zero: Route 53 answers with any
        allowed[name] = {v.rstrip(".") for r in positive for v in r.values}
    allowed.update(topology_for(policy).alias_answers(mine, allowed))
    return allowed


def zone_nameservers(policy: Policy, zone: Sequence[Record]) -> list[str]:
    """The NS values of the zone apex: the NS record set whose name is the longest suffix of the record name."""
    api = rec.normalize_name(policy.dns.record_name)
    ns = [r for r in zone if r.type == "NS" and (api == r.name or api.endswith("." + r.name))]
    if not ns:
        return []
    apex = min(ns, key=lambda r: len(r.name))
    return [v.rstrip(".") for v in apex.values]


def _address(server: str) -> tuple[str, int]:
    host, _, port = server.rpartition(":") if server.count(":") == 1 else (server, "", "")
    host = host or server
    try:
        ipaddress.ip_address(host)
        return host, int(port or 53)
    except ValueError:
        answer = dns.resolver.resolve(host, "A", lifetime=3.0)
        return str(answer[0]), int(port or 53)


def verify(
    policy: Policy,
    zone: Sequence[Record],
    nameservers: Sequence[str] | None = None,
    timeout_s: float = 2.0,
    *,
    log: Any = log,
    time_left: Callable[[], float] | None = None,
) -> list[dict[str, Any]]:
    """Query every server for every owned name; one `route53.verified` event per answer; returns them.

    `log` is the caller's bound logger (the context fields); `time_left` stops asking (one
    `route53.verify_failed`, `error: deadline`) when the next query could outlive the caller's deadline.
    """
    servers = list(nameservers) if nameservers else zone_nameservers(policy, zone)
    rdtype = dns.rdatatype.from_text(policy.dns.record_type)
    out: list[dict[str, Any]] = []
    for server in servers:
        for name, allowed in expected_answers(policy, zone).items():  # a server that fails is not asked again
            if time_left is not None and time_left() < timeout_s:
                log.warning("route53.verify_failed", error="deadline", asked=len(out))
                return out
            event = _ask(server, name, allowed, rdtype, timeout_s)
            (log.info if event["ok"] else log.warning)("route53.verified", **event)
            out.append(event)
            if "error" in event:
                break
    return out


def _ask(server: str, name: str, allowed: set[str], rdtype: Any, timeout_s: float) -> dict[str, Any]:
    event: dict[str, Any] = {"nameserver": server, "name": name, "expected": sorted(allowed)}
    try:
        host, port = _address(server)
        response = dns.query.udp(dns.message.make_query(name, rdtype), host, port=port, timeout=timeout_s)
        answers = sorted(
            rd.to_text().rstrip(".") for rrset in response.answer if rrset.rdtype == rdtype for rd in rrset
        )
        event.update(answers=answers, ok=bool(answers) and set(answers) <= allowed)
    except (dns.exception.DNSException, OSError, ValueError) as exc:
        event.update(answers=[], ok=False, error=type(exc).__name__)
    return event
