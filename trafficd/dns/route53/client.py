"""The boto3 side of Route 53: the client (retries, timeouts, endpoint, User-Agent) and the paginated listing.

The client is made by botocore's session, the core of boto3 that `boto3.client()` calls: the same credential
chain, retries and endpoint rules, without importing boto3's resource layer and s3transfer (~30 ms of every
`status` and controller start, measured with `bench-cli`; Route 53 has no boto3 resources).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

import botocore.session
from botocore.config import Config

from trafficd.dns import records as rec
from trafficd.dns.route53.outcome import Route53Error
from trafficd.dns.route53.wire import record_from_rrset
from trafficd.model import Record
from trafficd.policy.schema import Policy

if TYPE_CHECKING:
    from mypy_boto3_route53 import Route53Client

PAGE_SIZE = 300


def route53_client(policy: Policy, *, total_max_attempts: int = 3, writer: str = "") -> Route53Client:
    """A Route 53 client (botocore's, as boto3 makes it): standard retry mode, the policy's endpoint_url if any.

    botocore's standard mode retries throttling and transient errors itself (`total_max_attempts` counts the
    first try), with its own jittered backoff; the provider's budgeted backoff is the layer above it. `writer`
    (host:pid) is appended to the User-Agent (`trafficd-writer/<writer>`), so API logs (CloudTrail, the test
    proxy's audit) name the process that sent each request.
    """
    retries: Any = {"mode": "standard", "total_max_attempts": total_max_attempts}
    extra = f"trafficd-writer/{writer}" if writer else "trafficd"
    config = Config(retries=retries, connect_timeout=5, read_timeout=20, user_agent_extra=extra)
    kwargs: dict[str, Any] = {"config": config, "region_name": "us-east-1"}
    if policy.dns.endpoint_url:
        kwargs["endpoint_url"] = policy.dns.endpoint_url
    return cast("Route53Client", botocore.session.get_session().create_client("route53", **kwargs))


def dns_order(name: str) -> str:
    """A name's place in a ListResourceRecordSets answer: its labels reversed (`com.example.api`)."""
    return ".".join(reversed(name.rstrip(".").lower().split(".")))


def list_zone(client: Route53Client, zone_id: str, page_size: int = PAGE_SIZE) -> tuple[list[Record], int]:
    """Every record set in the zone and the number of API calls (paginated; de-duplicated by key).

    Raises ClientError/BotoCoreError from boto3, and Route53Error when a page does not advance.
    """
    return _scan(client, zone_id, page_size)


def list_names(
    client: Route53Client, zone_id: str, names: Iterable[str], page_size: int = PAGE_SIZE
) -> tuple[list[Record], int]:
    """The record sets from the first of `names` to the last in listing order, and the number of API calls.

    One range scan (StartRecordName = the first name, stopping at the page that passes the last): the owned
    names of the default layout (`api…`, `*.pool.api…`, `_trafficd-epoch.api…`) are one contiguous range, so
    this reads the owned records and whatever else lives under the record name, not the whole zone. That costs
    fewer calls than one StartRecordName per pool (measured: `trafficd bench dns`).
    """
    ordered = sorted(names, key=dns_order)
    if not ordered:
        return [], 0
    return _scan(client, zone_id, page_size, start=ordered[0], stop=dns_order(ordered[-1]))


def apex_ns(client: Route53Client, zone_id: str) -> tuple[list[Record], int]:
    """The zone apex's NS record set (what verification asks when no name servers are given): two calls."""
    first = client.list_resource_record_sets(HostedZoneId=zone_id, MaxItems="1")["ResourceRecordSets"]
    if not first:
        return [], 1
    page = client.list_resource_record_sets(
        HostedZoneId=zone_id, StartRecordName=first[0]["Name"], StartRecordType="NS", MaxItems="1"
    )
    apex = dns_order(first[0]["Name"])
    found = [record_from_rrset(r) for r in page["ResourceRecordSets"]]
    return [r for r in found if r.type == "NS" and dns_order(r.name) == apex], 2


def _scan(
    client: Route53Client, zone_id: str, page_size: int, start: str | None = None, stop: str | None = None
) -> tuple[list[Record], int]:
    """Pages from `start` (the zone's first name when None) until the end, or past `stop` (a dns_order key)."""
    out: dict[rec.Key, Record] = {}
    kwargs: dict[str, Any] = {"HostedZoneId": zone_id, "MaxItems": str(page_size)}
    if start is not None:
        kwargs["StartRecordName"] = start
    starts: set[tuple[str, str, str]] = set()
    calls = 0
    while True:
        calls += 1
        page = client.list_resource_record_sets(**kwargs)
        passed = False
        for rrset in page["ResourceRecordSets"]:
            r = record_from_rrset(rrset)
            if stop is not None and dns_order(r.name) > stop:
                passed = True
                continue
            out.setdefault(r.key, r)
        if passed or not page.get("IsTruncated"):
            return list(out.values()), calls
        start_at = (page["NextRecordName"], page["NextRecordType"], page.get("NextRecordIdentifier", ""))
        if start_at in starts:
            raise Route53Error(f"ListResourceRecordSets pagination did not advance past {start_at}")
        starts.add(start_at)
        kwargs.update(StartRecordName=start_at[0], StartRecordType=start_at[1])
        if start_at[2]:
            kwargs["StartRecordIdentifier"] = start_at[2]
        else:
            kwargs.pop("StartRecordIdentifier", None)
