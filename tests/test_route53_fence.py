"""The fence Route 53 enforces, through the test proxy in front of moto: exact DELETEs, all-or-nothing batches,
the writer epoch, and what the provider does with a refusal (fenced, never resent), a deadline, AccessDenied
and a freeze. The proxy's own rules and records are tested first, with raw boto3 batches."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, MutableMapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from dns_fixtures import ctx, make_policy
from r53proxy import Route53Proxy, start
from structlog.testing import capture_logs
from test_route53_faults import FakeTime

from trafficd.dns import records as rec
from trafficd.dns.provider import Status
from trafficd.dns.route53.provider import Route53Provider, bootstrap
from trafficd.dns.route53.wire import change_batch, rrset_from_record
from trafficd.model import Record, identity_matrix
from trafficd.policy.schema import Policy

if TYPE_CHECKING:
    from mypy_boto3_route53.type_defs import ChangeBatchTypeDef

REGIONS = ["us-east", "eu-west", "ap-southeast"]
DRAIN_EU = {
    "us-east": {"us-east": 1.0},
    "eu-west": {"us-east": 0.5, "eu-west": 0.5},
    "ap-southeast": {"ap-southeast": 1.0},
}


@pytest.fixture
def proxy(moto: Any) -> Iterator[Route53Proxy]:
    p = start(moto.upstream_url)
    yield p
    p.stop()


@pytest.fixture
def policy(hosted_zone: dict[str, str], moto: Any, route53: Any) -> Policy:
    p = make_policy(hosted_zone["id"], hosted_zone["name"], endpoint_url=moto.url)
    bootstrap(p, route53)
    return p


def client(proxy: Route53Proxy, writer: str = "") -> Any:
    extra = f"trafficd-writer/{writer}" if writer else ""
    config = Config(retries={"total_max_attempts": 1, "mode": "standard"}, user_agent_extra=extra)
    return boto3.client("route53", endpoint_url=proxy.url, region_name="us-east-1", config=config)


def provider(policy: Policy, proxy: Route53Proxy, writer: str, time: FakeTime | None = None) -> Route53Provider:
    if time is None:
        return Route53Provider(policy, client(proxy, writer))
    return Route53Provider(policy, client(proxy, writer), clock=time.clock, sleep=time.sleep, rand=lambda: 1.0)


def member(policy: Policy, src: str, dst: str) -> Record:
    """The owned pool member src→dst as bootstrap wrote it."""
    pool = rec.pool_name(policy, src)
    key = (pool, "CNAME", rec.member_set_identifier(policy, src, dst))
    return next(
        r
        for r in Route53Provider(policy, boto3.client("route53", endpoint_url=policy.dns.endpoint_url)).list_zone()
        if r.key == key
    )


def events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


# ---------------------------------------------------------------- the proxy enforces Route 53's rules


def test_delete_must_match_exactly_and_the_batch_is_all_or_nothing(policy: Policy, proxy: Route53Proxy) -> None:
    """A DELETE with a stale weight fails the whole batch with Route 53's message; its good changes do not land."""
    r53, zid = client(proxy), policy.dns.zone_id
    own = member(policy, "eu-west", "eu-west")
    other = member(policy, "eu-west", "us-east")
    stale = replace(own, weight=200)
    batch = change_batch([rec.Change(other, replace(other, weight=9)), rec.Change(stale, replace(own, weight=5))], zid)
    with pytest.raises(ClientError) as err:
        r53.change_resource_record_sets(HostedZoneId=zid, ChangeBatch=batch)
    assert err.value.response["Error"]["Code"] == "InvalidChangeBatch"
    sid = own.set_identifier
    assert err.value.response["Error"]["Message"].startswith(  # then the CREATE's "already exists"
        f"[Tried to delete resource record set [name='{own.name}', type='CNAME', set-identifier='{sid}'] "
        "but the values provided do not match the current values"
    )
    assert member(policy, "eu-west", "us-east") == other  # the first change of the batch did not land either
    assert proxy.accepted_batches == [] and len(proxy.refused_batches) == 1


def test_delete_of_an_absent_record_and_create_of_an_existing_one_are_refused(
    policy: Policy, proxy: Route53Proxy
) -> None:
    """DELETE of nothing: "not found"; CREATE over an existing record: "already exists" (moto alone takes both)."""
    r53, zid = client(proxy), policy.dns.zone_id
    ghost = replace(member(policy, "us-east", "us-east"), set_identifier="ghost")
    existing = member(policy, "us-east", "eu-west")
    for change, words in (
        (rec.Change(ghost, ghost), "but it was not found"),
        (rec.Change(None, existing), "but it already exists"),
    ):
        with pytest.raises(ClientError) as err:
            r53.change_resource_record_sets(HostedZoneId=zid, ChangeBatch=change_batch([change], zid))
        assert words in err.value.response["Error"]["Message"]


def test_accepted_batches_are_recorded_with_time_writer_and_epoch(policy: Policy, proxy: Route53Proxy) -> None:
    """Every accepted batch is kept with its time, the writer named in the User-Agent and the epoch it asserts."""
    writer = provider(policy, proxy, "host-a:42")
    with capture_logs() as logs:
        taken = writer.take_over(context=ctx(writer="host-a:42"))
        assert taken.status == Status.APPLIED and taken.epoch == 1
        assert writer.reconcile(DRAIN_EU, context=ctx(epoch=1, writer="host-a:42")).status == Status.APPLIED
    assert not events(logs, "route53.drift_detected")  # its own epoch record is not drift
    takeover, drain = proxy.accepted_batches
    assert (takeover.writer, takeover.epoch_before, takeover.epoch) == ("host-a:42", None, 1)
    assert (drain.writer, drain.epoch_before, drain.epoch) == ("host-a:42", 1, 1)  # asserted: DELETE + CREATE of 1
    assert [a for a, _ in drain.changes] == ["DELETE", "CREATE"] * 3  # the epoch, then each replaced member
    assert takeover.at <= drain.at and drain.change_id != takeover.change_id


def test_rate_limit_answers_throttling(moto: Any, policy: Policy) -> None:
    """Beyond `rate_limit_per_s` requests per second the proxy answers Throttling, as Route 53's account limit does."""
    limited = start(moto.upstream_url, rate_limit_per_s=2, clock=lambda: 0.0)  # every call in the same second
    try:
        r53 = client(limited)
        codes = []
        for _ in range(4):
            try:
                r53.list_resource_record_sets(HostedZoneId=policy.dns.zone_id)
                codes.append("ok")
            except ClientError as exc:
                codes.append(exc.response["Error"]["Code"])
        assert codes[:2] == ["ok", "ok"] and "Throttling" in codes[2:]
    finally:
        limited.stop()


def test_changes_stay_pending_for_pending_s(moto: Any, policy: Policy) -> None:
    """With pending_s a change is PENDING until that much time has passed, then INSYNC (GetChange by the proxy)."""
    now = [0.0]
    slow = start(moto.upstream_url, pending_s=30.0, clock=lambda: now[0])
    try:
        r53 = client(slow)
        m = member(policy, "us-east", "eu-west")
        batch = change_batch([rec.Change(m, replace(m, weight=1))], policy.dns.zone_id)
        info = r53.change_resource_record_sets(HostedZoneId=policy.dns.zone_id, ChangeBatch=batch)["ChangeInfo"]
        assert info["Status"] == "PENDING"
        assert r53.get_change(Id=info["Id"])["ChangeInfo"]["Status"] == "PENDING"
        now[0] = 31.0
        assert r53.get_change(Id=info["Id"])["ChangeInfo"]["Status"] == "INSYNC"
    finally:
        slow.stop()


# ---------------------------------------------------------------- the provider and the fence


async def test_a_deposed_writers_batch_is_refused_by_route53(policy: Policy, proxy: Route53Proxy) -> None:
    """A leader reads (epoch 1), a new leader takes epoch 2 before the batch goes out: Route 53 refuses the whole
    batch (fenced), nothing of it lands, and it is not sent again."""
    old = provider(policy, proxy, "old:1")
    new = provider(policy, proxy, "new:2")
    assert old.take_over(context=ctx(writer="old:1")).epoch == 1
    real = old.client.change_resource_record_sets

    def takeover_in_between(**kw: Any) -> Any:
        new.take_over(context=ctx(writer="new:2"))  # lands between the old leader's read and its send
        old.client.change_resource_record_sets = real  # type: ignore[method-assign]
        return real(**kw)

    old.client.change_resource_record_sets = takeover_in_between  # type: ignore[method-assign]
    with capture_logs() as logs:
        result = await asyncio.to_thread(old.reconcile, DRAIN_EU, context=ctx(epoch=1, writer="old:1"))
    assert result.status == Status.FENCED and not result.changes
    assert "but the values provided do not match" in result.problems[0] or "not found" in result.problems[0]
    (fenced,) = events(logs, "route53.fenced")
    assert fenced["reason"] == "stale_read" and fenced["sent"] is True
    assert [b.writer for b in proxy.accepted_batches] == ["old:1", "new:2"]  # the two takeovers, no drain
    assert old.current_matrix() == identity_matrix(REGIONS)
    again = await asyncio.to_thread(old.reconcile, DRAIN_EU, context=ctx(epoch=1, writer="old:1"))
    assert again.status == Status.FENCED and len(proxy.refused_batches) == 1  # refused on read, not resent


async def test_a_hand_edit_between_read_and_send_fences_the_batch(policy: Policy, proxy: Route53Proxy) -> None:
    """Without any epoch, the exact DELETE alone refuses a batch whose records changed since they were read."""
    writer = provider(policy, proxy, "w:1")
    real = writer.client.change_resource_record_sets
    m = member(policy, "eu-west", "eu-west")

    def edit_in_between(**kw: Any) -> Any:
        rrset = rrset_from_record(replace(m, weight=77), "Z")  # a plain dict[str, Any], as wire builds them
        batch = cast("ChangeBatchTypeDef", {"Changes": [{"Action": "UPSERT", "ResourceRecordSet": rrset}]})
        real(HostedZoneId=policy.dns.zone_id, ChangeBatch=batch)
        writer.client.change_resource_record_sets = real  # type: ignore[method-assign]
        return real(**kw)

    writer.client.change_resource_record_sets = edit_in_between  # type: ignore[method-assign]
    result = await asyncio.to_thread(writer.reconcile, DRAIN_EU, context=ctx(writer="w:1"))
    assert result.status == Status.FENCED
    assert member(policy, "eu-west", "eu-west").weight == 77  # the hand edit stands; the stale batch did not land


def test_frozen_logs_drift_and_writes_nothing(policy: Policy, proxy: Route53Proxy) -> None:
    """While frozen a hand edit is logged as drift (action frozen) and not corrected; no batch is sent."""
    writer = provider(policy, proxy, "w:1")
    assert writer.reconcile(identity_matrix(REGIONS), context=ctx()).status == Status.UNCHANGED
    m = member(policy, "ap-southeast", "us-east")
    batch = {"Changes": [{"Action": "UPSERT", "ResourceRecordSet": rrset_from_record(replace(m, weight=40), "Z")}]}
    client(proxy).change_resource_record_sets(HostedZoneId=policy.dns.zone_id, ChangeBatch=batch)
    sent = len(proxy.accepted_batches)
    with capture_logs() as logs:
        result = writer.reconcile(identity_matrix(REGIONS), context=ctx(frozen=True))
    assert result.status == Status.FROZEN
    (drift,) = events(logs, "route53.drift_detected")
    assert drift["action"] == "frozen" and drift["after"]["weight"] == 40 and drift["regions"] == ["ap-southeast"]
    assert len(proxy.accepted_batches) == sent and member(policy, "ap-southeast", "us-east").weight == 40


def _hand_edit(policy: Policy, proxy: Route53Proxy, src: str, dst: str, weight: int) -> None:
    m = member(policy, src, dst)
    batch = {"Changes": [{"Action": "UPSERT", "ResourceRecordSet": rrset_from_record(replace(m, weight=weight), "Z")}]}
    client(proxy).change_resource_record_sets(HostedZoneId=policy.dns.zone_id, ChangeBatch=batch)


def test_a_hand_edit_between_the_takeover_and_the_first_reconcile_is_drift(policy: Policy, proxy: Route53Proxy) -> None:
    """An edit after `take_over` but before the writer's first reconcile is logged as drift and put back as drift."""
    writer = provider(policy, proxy, "w:1")
    epoch = writer.take_over(context=ctx(writer="w:1")).epoch
    _hand_edit(policy, proxy, "eu-west", "eu-west", 200)
    with capture_logs() as logs:
        result = writer.reconcile(identity_matrix(REGIONS), context=ctx(writer="w:1", epoch=epoch))
    (drift,) = events(logs, "route53.drift_detected")
    assert drift["action"] == "correct" and (drift["before"]["weight"], drift["after"]["weight"]) == (255, 200)
    assert result.status == Status.APPLIED and [e["cause"] for e in events(logs, "route53.changes_applied")] == [
        "drift"
    ]


def test_with_drift_respect_an_edit_before_the_first_reconcile_stands(
    hosted_zone: dict[str, str], moto: Any, route53: Any, proxy: Route53Proxy
) -> None:
    """`dns.drift: respect`: an edit between `take_over` and the first reconcile is left as it is, not overwritten."""
    policy = make_policy(hosted_zone["id"], hosted_zone["name"], endpoint_url=moto.url, drift="respect")
    bootstrap(policy, route53)
    writer = provider(policy, proxy, "w:1")
    epoch = writer.take_over(context=ctx(writer="w:1")).epoch
    _hand_edit(policy, proxy, "eu-west", "eu-west", 200)
    assert writer.reconcile(identity_matrix(REGIONS), context=ctx(writer="w:1", epoch=epoch)).status == Status.UNCHANGED
    assert member(policy, "eu-west", "eu-west").weight == 200


def test_a_takeover_forgets_what_an_earlier_tenure_wrote(policy: Policy, proxy: Route53Proxy) -> None:
    """A writer deposed and back: the other writer's batches, seen at its new takeover, are not drift."""
    a, b = provider(policy, proxy, "a:1"), provider(policy, proxy, "b:2")
    assert a.reconcile(DRAIN_EU, context=ctx(writer="a:1", epoch=a.take_over(context=ctx()).epoch)).changes
    assert b.reconcile(identity_matrix(REGIONS), context=ctx(writer="b:2", epoch=b.take_over(context=ctx()).epoch))
    with capture_logs() as logs:
        again = a.take_over(context=ctx(writer="a:1")).epoch
        result = a.reconcile(identity_matrix(REGIONS), context=ctx(writer="a:1", epoch=again))
    assert result.status == Status.UNCHANGED and not events(logs, "route53.drift_detected")


def test_every_route53_event_carries_the_context(policy: Policy, proxy: Route53Proxy) -> None:
    """Each route53.* event names the evaluation, the policy hash, the cause and the regions it touches."""
    writer = provider(policy, proxy, "w:1")
    context = replace(ctx(writer="w:1"), evaluation_id="ev-7", policy_hash="abc123")
    with capture_logs() as logs:
        writer.reconcile(DRAIN_EU, context=context)
    mine = [e for e in logs if e["event"].startswith("route53.")]
    assert {e["event"] for e in mine} >= {"route53.changes_applied", "route53.change_insync"}
    for e in mine:
        assert (e["evaluation_id"], e["policy_hash"], e["cause"]) == ("ev-7", "abc123", "plan")
    assert events(logs, "route53.changes_applied")[0]["regions"] == ["eu-west"]


def test_no_send_starts_after_the_deadline(policy: Policy, proxy: Route53Proxy) -> None:
    """Throttled until the deadline: the backoff stops before it, and nothing is sent after it."""
    time = FakeTime()
    writer = provider(policy, proxy, "w:1", time)
    proxy.inject("change", "error", times=-1, code="Throttling")
    result = writer.reconcile(DRAIN_EU, context=ctx(deadline_s=time.now + 3.0))
    assert result.status == Status.THROTTLED
    assert time.now <= 1003.0 and time.sleeps == [0.5, 1.0]  # the next delay (2 s) would pass the deadline
    calls = len(proxy.ops)
    late = writer.reconcile(DRAIN_EU, context=ctx(deadline_s=time.now - 1.0))
    assert late.status == Status.PENDING and not late.changes and len(proxy.ops) == calls  # not even a read


def test_access_denied_is_retried_with_backoff_and_one_event_per_episode(policy: Policy, proxy: Route53Proxy) -> None:
    """AccessDenied: one error event, then retries after 15 s, 30 s, 60 s … (5 min cap); a success ends it."""
    time = FakeTime()
    writer = provider(policy, proxy, "w:1", time)
    proxy.inject("change", "error", times=3, status=403, code="AccessDenied", message="not authorized")
    with capture_logs() as logs:
        statuses, waits = [], []
        for step in (0.0, 1.0, 14.0, 1.0, 30.0, 60.0):
            time.now += step
            result = writer.reconcile(DRAIN_EU, context=ctx())
            statuses.append(str(result.status))
            waits.append(result.retry_after_s)
    assert statuses == ["denied", "denied", "denied", "denied", "denied", "applied"]
    assert waits[:5] == [15.0, 14.0, 30.0, 29.0, 60.0]
    assert proxy.ops.count("change") == 4  # at 0 s, 15 s, 46 s, 106 s: not on every call
    assert len(events(logs, "route53.access_denied")) == 1 and len(events(logs, "route53.access_restored")) == 1


def test_a_takeover_keeps_holding_a_pending_traffic_change(policy: Policy, proxy: Route53Proxy) -> None:
    """A change still PENDING keeps holding the zone after a takeover (the epoch change itself holds nothing)."""
    time = FakeTime()
    writer = provider(policy, proxy, "w:1", time)
    proxy.inject("change", "pending")
    proxy.inject("get_change", "pending", times=-1)
    first = writer.reconcile(DRAIN_EU, context=ctx())
    assert first.status == Status.APPLIED and writer.pending_change_id == first.change_id
    assert writer.take_over(context=ctx()).epoch == 1
    time.now += 5.0
    held = writer.reconcile(identity_matrix(REGIONS), context=ctx(epoch=1))
    assert held.status == Status.PENDING and writer.pending_change_id == first.change_id
