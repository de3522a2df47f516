"""The boto3 side of Route 53: the client (retries, timeouts, endpoint, User-Agent) and the paginated listing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import boto3
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
    """A boto3 Route 53 client: standard retry mode, the policy's endpoint_url (moto) when it gives one.

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
    client: Route53Client = boto3.client("route53", **kwargs)
    return client


def list_zone(client: Route53Client, zone_id: str, page_size: int = PAGE_SIZE) -> tuple[list[Record], int]:
    """Every record set in the zone and the number of API calls (paginated; de-duplicated by key).

    Raises ClientError/BotoCoreError from boto3, and Route53Error when a page does not advance.
    """
    out: dict[rec.Key, Record] = {}
    kwargs: dict[str, Any] = {"HostedZoneId": zone_id, "MaxItems": str(page_size)}
    starts: set[tuple[str, str, str]] = set()
    calls = 0
    while True:
        calls += 1
        page = client.list_resource_record_sets(**kwargs)
        for rrset in page["ResourceRecordSets"]:
            r = record_from_rrset(rrset)
            out.setdefault(r.key, r)
        if not page.get("IsTruncated"):
            return list(out.values()), calls
        start = (page["NextRecordName"], page["NextRecordType"], page.get("NextRecordIdentifier", ""))
        if start in starts:
            raise Route53Error(f"ListResourceRecordSets pagination did not advance past {start}")
        starts.add(start)
        kwargs.update(StartRecordName=start[0], StartRecordType=start[1])
        if start[2]:
            kwargs["StartRecordIdentifier"] = start[2]
        else:
            kwargs.pop("StartRecordIdentifier", None)
