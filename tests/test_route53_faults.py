"""Route 53 failures, injected by the test proxy in front of moto server (tests/r53proxy.py), and botocore's
Stubber for paging.

The proxy enforces what Route 53 enforces and can, per operation, answer with an API error instead, keep a
change PENDING, or drop the connection before or after applying a batch (outcome unknown). The provider runs
in a thread, as the controller runs it; its clock and sleep are fakes, so backoff costs no real time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, MutableMapping
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError, NoCredentialsError
from botocore.stub import Stubber
from dns_fixtures import ctx, make_policy
from r53proxy import Fault, Route53Proxy, start
from structlog.testing import capture_logs

from trafficd.dns.route53.client import route53_client
from trafficd.dns.route53.outcome import classify
from trafficd.dns.route53.provider import Route53Provider, bootstrap
from trafficd.model import identity_matrix
from trafficd.policy.schema import Policy

REGIONS = ["us-east", "eu-west", "ap-southeast"]
DRAIN_US = {
    "us-east": {"us-east": 0.0, "eu-west": 1.0, "ap-southeast": 0.0},
    "eu-west": {"eu-west": 1.0},
    "ap-southeast": {"ap-southeast": 1.0},
}


class FakeTime:
    """A clock that moves only when the reconciler sleeps (or the test advances it)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def proxy(moto: Any) -> Iterator[Route53Proxy]:
    """A proxy of this test's own in front of moto: its own faults and its own list of operations."""
    p = start(moto.upstream_url)
    yield p
    p.stop()


@pytest.fixture
def policy(hosted_zone: dict[str, str], moto: Any, route53: Any) -> Policy:
    p = make_policy(hosted_zone["id"], hosted_zone["name"], endpoint_url=moto.url, retry_budget="20s")
    bootstrap(p, route53)
    return p


def reconciler(policy: Policy, proxy: Route53Proxy, time: FakeTime) -> Route53Provider:
    client = boto3.client(
        "route53",
        endpoint_url=proxy.url,
        region_name="us-east-1",
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )
    return Route53Provider(policy, client, clock=time.clock, sleep=time.sleep, rand=lambda: 1.0)


def events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


@pytest.mark.parametrize("code", ["Throttling", "PriorRequestNotComplete"])
async def test_throttled_change_is_retried_with_capped_backoff(policy: Policy, proxy: Route53Proxy, code: str) -> None:
    """Throttling / PriorRequestNotComplete on the change: backoff 0.5 s, 1 s, then the same batch lands."""
    time = FakeTime()
    r = reconciler(policy, proxy, time)
    proxy.faults.append(Fault("change", "error", times=2, code=code))
    with capture_logs() as logs:
        result = await asyncio.to_thread(r.reconcile, DRAIN_US, context=ctx())
    assert result.status == "applied"
    assert time.sleeps == [0.5, 1.0]
    assert [e["code"] for e in events(logs, "route53.throttled")] == [code, code]
    assert proxy.ops == ["list", "change", "change", "change"]
    assert len(events(logs, "route53.changes_applied")) == 1


async def test_retry_budget_bounds_throttling(policy: Policy, proxy: Route53Proxy) -> None:
    """Endless throttling stops when the next delay would pass the 20 s budget, and nothing is written."""
    time = FakeTime()
    r = reconciler(policy, proxy, time)
    proxy.faults.append(Fault("change", "error", times=-1, code="Throttling"))
    with capture_logs() as logs:
        result = await asyncio.to_thread(r.reconcile, DRAIN_US, context=ctx())
    assert result.status == "throttled"
    assert time.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0]  # next would be 10 s with 4.5 s left
    assert sum(time.sleeps) <= 20.0
    assert len(events(logs, "route53.retry_budget_exhausted")) == 1
    assert not events(logs, "route53.changes_applied")


async def test_throttled_listing_is_retried(policy: Policy, proxy: Route53Proxy) -> None:
    """A throttled ListResourceRecordSets is retried after a backoff too."""
    time = FakeTime()
    r = reconciler(policy, proxy, time)
    proxy.faults.append(Fault("list", "error", code="Throttling"))
    result = await asyncio.to_thread(r.reconcile, DRAIN_US, context=ctx())
    assert result.status == "applied" and time.sleeps == [0.5]
    assert proxy.ops == ["list", "list", "change"]


async def test_lost_response_is_re_read_before_retrying(policy: Policy, proxy: Route53Proxy) -> None:
    """A change applied but its response lost: the re-read shows it landed, so it is not sent again."""
    time = FakeTime()
    r = reconciler(policy, proxy, time)
    proxy.faults.append(Fault("change", "drop_after"))
    with capture_logs() as logs:
        result = await asyncio.to_thread(r.reconcile, DRAIN_US, context=ctx())
    assert proxy.ops == ["list", "change", "list"]
    assert result.status == "applied" and result.change_id is None
    assert len(events(logs, "route53.outcome_unknown")) == 1
    assert events(logs, "route53.changes_applied")[0]["confirmed_by"] == "re-read"
    assert not events(logs, "route53.drift_detected")


async def test_lost_request_is_re_read_then_sent_again(policy: Policy, proxy: Route53Proxy) -> None:
    """A change that never reached Route 53: the re-read still shows the difference, so the batch is sent again."""
    time = FakeTime()
    r = reconciler(policy, proxy, time)
    proxy.faults.append(Fault("change", "drop_before"))
    result = await asyncio.to_thread(r.reconcile, DRAIN_US, context=ctx())
    assert proxy.ops == ["list", "change", "list", "change"]
    assert result.status == "applied" and result.change_id is not None


async def test_pending_change_holds_the_zone_until_insync(policy: Policy, proxy: Route53Proxy) -> None:
    """PENDING → the next cycles only poll GetChange (every poll_interval) and change nothing until INSYNC."""
    time = FakeTime()
    r = reconciler(policy, proxy, time)
    proxy.faults += [Fault("change", "pending"), Fault("get_change", "pending")]
    with capture_logs() as logs:
        first = await asyncio.to_thread(r.reconcile, DRAIN_US, context=ctx())
        assert first.status == "applied" and r.pending_change_id == first.change_id
        time.now += 1.0  # sooner than poll_interval (3 s): no call at all
        held = await asyncio.to_thread(r.reconcile, identity_matrix(REGIONS), context=ctx())
        time.now += 3.0
        still = await asyncio.to_thread(r.reconcile, identity_matrix(REGIONS), context=ctx())
        time.now += 3.0
        after = await asyncio.to_thread(r.reconcile, identity_matrix(REGIONS), context=ctx())
    assert (held.status, held.api_calls, still.status) == ("pending", 0, "pending")
    assert proxy.ops == ["list", "change", "get_change", "get_change", "list", "change"]
    assert after.status == "applied"
    insync = events(logs, "route53.change_insync")
    assert insync[0]["change_id"] == first.change_id and insync[0]["elapsed_s"] == 7.0


async def test_stuck_pending_alerts_once_and_holds(policy: Policy, proxy: Route53Proxy) -> None:
    """A change PENDING past propagation_timeout raises one alert event and keeps holding new changes."""
    time = FakeTime()
    r = reconciler(policy, proxy, time)
    proxy.faults += [Fault("change", "pending"), Fault("get_change", "pending", times=-1)]
    with capture_logs() as logs:
        await asyncio.to_thread(r.reconcile, DRAIN_US, context=ctx())
        statuses = []
        for _ in range(3):
            time.now += 100.0
            statuses.append((await asyncio.to_thread(r.reconcile, identity_matrix(REGIONS), context=ctx())).status)
    assert statuses == ["pending", "stuck", "stuck"]
    alerts = events(logs, "route53.change_pending_timeout")
    assert len(alerts) == 1 and alerts[0]["action"] == "hold" and alerts[0]["elapsed_s"] == 200.0
    assert proxy.ops.count("change") == 1


async def test_access_denied_is_one_error_and_no_retry(policy: Policy, proxy: Route53Proxy) -> None:
    """AccessDenied: one access_denied event, no backoff, and the same batch is not sent again next cycle."""
    time = FakeTime()
    r = reconciler(policy, proxy, time)
    proxy.faults.append(Fault("change", "error", times=-1, status=403, code="AccessDenied", message="not authorized"))
    with capture_logs() as logs:
        first = await asyncio.to_thread(r.reconcile, DRAIN_US, context=ctx())
        second = await asyncio.to_thread(r.reconcile, DRAIN_US, context=ctx())
    assert first.status == second.status == "denied"
    assert time.sleeps == [] and proxy.ops.count("change") == 1
    denied = events(logs, "route53.access_denied")
    assert len(denied) == 1 and denied[0]["message"] == "not authorized"


async def test_invalid_change_batch_is_one_error_and_no_retry(policy: Policy, proxy: Route53Proxy) -> None:
    """InvalidChangeBatch from Route 53: one batch_rejected event naming the reason, no retry."""
    time = FakeTime()
    r = reconciler(policy, proxy, time)
    proxy.faults.append(Fault("change", "error", times=-1, code="InvalidChangeBatch", message="bad weight"))
    with capture_logs() as logs:
        result = await asyncio.to_thread(r.reconcile, DRAIN_US, context=ctx())
    assert result.status == "refused" and result.problems == ("bad weight",)
    rejected = events(logs, "route53.batch_rejected")
    assert len(rejected) == 1 and rejected[0]["source"] == "route53" and len(rejected[0]["changes"]) == 2
    assert time.sleeps == [] and proxy.ops.count("change") == 1


async def test_standard_retry_mode_absorbs_one_throttle(policy: Policy, proxy: Route53Proxy) -> None:
    """route53_client sets botocore's standard retry mode, which retries a single Throttling by itself."""
    client = route53_client(
        policy.model_copy(update={"dns": policy.dns.model_copy(update={"endpoint_url": proxy.url})})
    )
    retries = client.meta.config.retries  # type: ignore[attr-defined]
    assert retries == {"mode": "standard", "total_max_attempts": 3}
    assert client.meta.endpoint_url == proxy.url
    proxy.faults.append(Fault("list", "error", code="Throttling"))
    time = FakeTime()
    r = Route53Provider(policy, client, clock=time.clock, sleep=time.sleep)
    result = await asyncio.to_thread(r.reconcile, identity_matrix(REGIONS), context=ctx())
    assert result.status == "unchanged" and time.sleeps == []
    assert proxy.ops == ["list", "list"]


def test_listing_follows_next_record_identifier() -> None:
    """Pagination passes NextRecordIdentifier on (moto omits it; real Route 53 sends it within one name)."""
    policy = make_policy()
    client = boto3.client("route53", region_name="us-east-1")
    stub = Stubber(client)
    rr = {"Name": "p.example.com.", "Type": "CNAME", "TTL": 60, "Weight": 1, "ResourceRecords": [{"Value": "x."}]}
    base = {"HostedZoneId": "ZTEST", "MaxItems": "300"}
    page = {"IsTruncated": True, "MaxItems": "300", "NextRecordName": "p.example.com.", "NextRecordType": "CNAME"}
    stub.add_response(
        "list_resource_record_sets",
        {"ResourceRecordSets": [{**rr, "SetIdentifier": "a"}], **page, "NextRecordIdentifier": "b"},
        base,
    )
    stub.add_response(
        "list_resource_record_sets",
        {"ResourceRecordSets": [{**rr, "SetIdentifier": "b"}], "IsTruncated": False, "MaxItems": "300"},
        {**base, "StartRecordName": "p.example.com.", "StartRecordType": "CNAME", "StartRecordIdentifier": "b"},
    )
    with stub:
        zone = Route53Provider(policy, client).list_zone()
    assert [r.set_identifier for r in zone] == ["a", "b"]
    stub.assert_no_pending_responses()


STALE = "[Tried to delete resource record set [name='a.example.com.', type='TXT'] but it was not found]"


def _client_error(code: str, status: int, message: str = "m") -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "Op")


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (_client_error("Throttling", 400), "throttled"),
        (_client_error("PriorRequestNotComplete", 400), "throttled"),
        (_client_error("InvalidChangeBatch", 400), "rejected"),
        (_client_error("InvalidChangeBatch", 400, STALE), "fenced"),
        (_client_error("AccessDenied", 403), "denied"),
        (_client_error("Whatever", 403), "denied"),
        (_client_error("ServiceUnavailable", 503), "ambiguous"),
        (_client_error("NoSuchHostedZone", 404), "failed"),
        (ConnectionClosedError(endpoint_url="http://x"), "ambiguous"),
        (EndpointConnectionError(endpoint_url="http://x"), "ambiguous"),
        (NoCredentialsError(), "failed"),
    ],
)
def test_error_tree(exc: Exception, kind: str) -> None:
    """Every error the API or botocore raises falls in one branch: throttled, ambiguous, fenced, rejected, denied,
    failed."""
    assert classify(exc) == kind


async def test_server_error_on_listing_is_retried(policy: Policy, proxy: Route53Proxy) -> None:
    """A 5xx from ListResourceRecordSets is transient: a `route53.retrying` event, a backoff, and a second read."""
    time = FakeTime()
    r = reconciler(policy, proxy, time)
    proxy.faults.append(Fault("list", "error", status=503, code="ServiceUnavailable"))
    with capture_logs() as logs:
        result = await asyncio.to_thread(r.reconcile, identity_matrix(REGIONS), context=ctx())
    assert result.status == "unchanged" and time.sleeps == [0.5]
    assert [e["code"] for e in events(logs, "route53.retrying")] == ["ServiceUnavailable"]
    assert not events(logs, "route53.throttled")


async def test_unknown_zone_is_one_error(policy: Policy, proxy: Route53Proxy) -> None:
    """NoSuchHostedZone is not retried: one request_failed event naming the call and code."""
    time = FakeTime()
    r = reconciler(policy, proxy, time)
    proxy.faults.append(Fault("list", "error", status=404, code="NoSuchHostedZone", message="no zone"))
    with capture_logs() as logs:
        result = await asyncio.to_thread(r.reconcile, identity_matrix(REGIONS), context=ctx())
    assert result.status == "error" and result.error == "NoSuchHostedZone: no zone" and time.sleeps == []
    failed = events(logs, "route53.request_failed")
    assert [(e["call"], e["code"]) for e in failed] == [("ListResourceRecordSets", "NoSuchHostedZone")]
