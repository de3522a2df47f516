"""The DNS provider port: Route 53 (moto behind the enforcing proxy) and the in-memory provider answer alike —
the matrix read back, plan, reconcile statuses, and the fence (writer epoch + exact deletes)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dns_fixtures import ctx, make_policy

from trafficd.dns import records as rec
from trafficd.dns.memory import MemoryProvider
from trafficd.dns.provider import DnsProvider, Status
from trafficd.dns.route53.provider import Route53Provider
from trafficd.model import identity_matrix

REGIONS = ["us-east", "eu-west", "ap-southeast"]
DRAIN_EU = {
    "us-east": {"us-east": 1.0},
    "eu-west": {"us-east": 0.5, "eu-west": 0.5},
    "ap-southeast": {"ap-southeast": 1.0},
}


@pytest.fixture(params=["route53", "memory"])
def provider(request: Any) -> Iterator[DnsProvider]:
    if request.param == "memory":
        yield MemoryProvider(make_policy())
        return
    route53, zone, moto = (request.getfixturevalue(n) for n in ("route53", "hosted_zone", "moto"))
    yield Route53Provider(make_policy(zone["id"], zone["name"], endpoint_url=moto.url), route53)


def test_matrix_is_none_until_every_owned_record_exists(provider: DnsProvider) -> None:
    """Before bootstrap no matrix is read (a start must not guess); after it, the identity."""
    assert provider.current_matrix() is None
    assert provider.bootstrap(context=ctx()).status == Status.APPLIED
    assert provider.current_matrix() == identity_matrix(REGIONS)
    assert provider.bootstrap(context=ctx()).status == Status.UNCHANGED


def test_reconcile_applies_then_is_unchanged(provider: DnsProvider) -> None:
    """A changed matrix is applied (plan said so, and wrote nothing); the same matrix again is unchanged."""
    provider.bootstrap(context=ctx())
    planned = provider.plan(DRAIN_EU)
    assert len(planned.changes) == 2 and provider.current_matrix() == identity_matrix(REGIONS)
    result = provider.reconcile(DRAIN_EU, context=ctx())
    assert result.status == Status.APPLIED and result.complete and len(result.changes) == 2
    matrix = provider.current_matrix()
    assert matrix is not None and matrix["eu-west"]["us-east"] == pytest.approx(128 / 256)
    assert provider.reconcile(DRAIN_EU, context=ctx()).status == Status.UNCHANGED


def test_a_deposed_writer_is_fenced_whatever_it_touches(provider: DnsProvider) -> None:
    """A takes epoch 1, B takes epoch 2: A's batch is refused (fenced) and changes nothing; B's lands."""
    provider.bootstrap(context=ctx())
    a = provider.take_over(context=ctx(writer="a"))
    b = provider.take_over(context=ctx(writer="b"))
    assert (a.status, a.epoch, b.status, b.epoch) == (Status.APPLIED, 1, Status.APPLIED, 2)
    assert provider.read_epoch() == 2
    stale = provider.reconcile(DRAIN_EU, context=ctx(epoch=1, writer="a"))
    assert stale.status == Status.FENCED and stale.epoch == 2 and not stale.complete
    assert provider.current_matrix() == identity_matrix(REGIONS)
    assert provider.reconcile(DRAIN_EU, context=ctx(epoch=2, writer="b")).status == Status.APPLIED
    assert provider.reconcile(identity_matrix(REGIONS), context=ctx(writer="legacy")).status == Status.FENCED


def test_frozen_writes_nothing(provider: DnsProvider) -> None:
    """With a frozen context a wanted change is reported (status frozen) and not written; takeover neither."""
    provider.bootstrap(context=ctx())
    result = provider.reconcile(DRAIN_EU, context=ctx(frozen=True))
    assert result.status == Status.FROZEN and len(result.changes) == 2
    assert provider.current_matrix() == identity_matrix(REGIONS)
    assert provider.take_over(context=ctx(frozen=True)).status == Status.FROZEN
    assert provider.read_epoch() is None


def test_owned_records_are_only_ours(provider: DnsProvider) -> None:
    """owned_records lists the 12 records the policy owns (the epoch record is the fence, not a traffic record)."""
    provider.bootstrap(context=ctx())
    provider.take_over(context=ctx())
    owned = provider.owned_records()
    assert len(owned) == 12 and {r.key for r in owned} == rec.owned_keys(make_policy_like(provider))


def make_policy_like(provider: DnsProvider) -> Any:
    return provider.policy  # type: ignore[attr-defined]


def test_memory_provider_refuses_a_batch_built_on_a_stale_read() -> None:
    """Another write between the read and the write makes the whole batch fenced (nothing of it applied)."""
    memory = MemoryProvider.bootstrapped(make_policy())
    other = MemoryProvider(make_policy(), zone=memory.zone)  # shares the zone: a second writer

    def the_other_writes_first() -> None:
        memory.before_write = None
        other.reconcile(DRAIN_EU, context=ctx())

    memory.before_write = the_other_writes_first
    drain_us = {"us-east": {"us-east": 0.5, "eu-west": 0.5}, "eu-west": {"us-east": 0.5, "eu-west": 0.5}}
    result = memory.reconcile(drain_us, context=ctx())
    assert result.status == Status.FENCED
    matrix = memory.current_matrix()
    assert matrix is not None and matrix["us-east"]["us-east"] == 1.0  # none of the stale batch landed
    assert [w.changes[0].after.set_identifier for w in other.history] == ["eu-west-to-us-east"]  # the other writer's


def test_memory_provider_answers_scripted_statuses() -> None:
    """Controller tests can script provider answers (e.g. denied) without writing."""
    memory = MemoryProvider.bootstrapped(make_policy(), script=[Status.DENIED])
    assert memory.reconcile(DRAIN_EU, context=ctx()).status == Status.DENIED
    assert memory.reconcile(DRAIN_EU, context=ctx()).status == Status.APPLIED


async def test_the_controller_runs_on_the_memory_provider(redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    """With a MemoryProvider injected (no moto), a breaching region's shift reaches DNS and a refused write is
    held; the writer is the controller's id."""
    from ctlkit import policy_text

    from trafficd.control.controller import Controller, Ports
    from trafficd.model import Sample
    from trafficd.policy.schema import load_policy
    from trafficd.runtime.reload import PolicyHolder
    from trafficd.stats import store

    path = tmp_path / "policy.yaml"
    zone = {"id": "ZMEMORY", "name": "mem.example.com."}
    path.write_text(policy_text(redis_url, key_prefix, zone, "http://127.0.0.1:9"))  # never contacted
    loaded = load_policy(path)
    memory = MemoryProvider.bootstrapped(loaded.policy)
    ports = Ports(dns=lambda p, w: memory)
    ctl = Controller(PolicyHolder(path, loaded), controller_id="ctl-mem", ports=ports)
    client = store.redis_client(loaded.policy.redis)
    now = time.time()
    latency = {"us-east": 200.0, "eu-west": 5000.0, "ap-southeast": 200.0}
    samples = [
        Sample(region=r, worker=f"{r}-w1", model="m", t=now - 0.5 - i * 0.01, ok=True, reason=None, total_ms=ms)
        for r, ms in latency.items()
        for i in range(20)
    ]
    await store.SampleSink(client, loaded.policy).write(samples)
    for r in latency:
        await store.SampleSink(client, loaded.policy).heartbeat("test-agent", r)
    await client.aclose()
    await ctl.evaluate_once()  # takes the lease and the writer epoch: no weight sent
    memory.script.append(Status.DENIED)
    await ctl.evaluate_once()  # wants eu-west at 0.5; DNS refuses: held
    assert memory.current_matrix() == identity_matrix(REGIONS)
    await ctl.evaluate_once(now=time.time() + 0.5)
    await ctl.shutdown()
    assert rec.own_weights(loaded.policy, memory.owned_records())["eu-west"] == 128
    assert [w.writer for w in memory.history[-1:]] == ["ctl-mem"]
