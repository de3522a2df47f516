"""30 regions against moto (behind the enforcing proxy): bootstrap and fleet-wide changes go out as valid batches
in order (≤ 100 changes each, aliases only after the pools they point at are INSYNC)."""

from __future__ import annotations

from typing import Any

from dns_fixtures import ctx, make_policy

from trafficd.dns import records as rec
from trafficd.dns.provider import Status
from trafficd.dns.route53.provider import Route53Provider
from trafficd.model import identity_matrix

NAMES = [f"r{i:02d}" for i in range(30)]
REGIONS = {n: (f"{n}.lb.example.net", "us-east-1") for n in NAMES}


def test_thirty_regions_bootstrap_and_a_fleet_wide_change(route53: Any, hosted_zone: dict[str, str], moto: Any) -> None:
    """930 records are created in 11 valid batches (pools, then the aliases), and a change to every pool lands
    whole in batches of ≤ 100 changes, each asserting the writer epoch."""
    policy = make_policy(hosted_zone["id"], hosted_zone["name"], endpoint_url=moto.url, regions=REGIONS)
    provider = Route53Provider(policy, route53)
    seen = len(moto.proxy.accepted_batches)
    boot = provider.bootstrap(context=ctx())
    assert boot.status == Status.APPLIED and len(boot.changes) == 930 and boot.batches == 11
    assert provider.current_matrix() == identity_matrix(NAMES)
    taken = provider.take_over(context=ctx())
    spill = {n: {n: 0.75, NAMES[(i + 1) % 30]: 0.25} for i, n in enumerate(NAMES)}
    result = provider.reconcile(spill, context=ctx(epoch=taken.epoch))
    assert result.status == Status.APPLIED and result.complete and len(result.changes) == 60 and result.batches == 2
    matrix = provider.current_matrix()
    assert matrix is not None and all(abs(matrix[n][n] - 191 / 255) < 1e-9 for n in NAMES)
    mine = [b for b in moto.proxy.accepted_batches[seen:] if b.zone_id == policy.dns.zone_id]
    assert all(len(b.changes) <= 100 for b in mine)
    assert [b.epoch for b in mine[-2:]] == [taken.epoch, taken.epoch]
    assert provider.reconcile(spill, context=ctx(epoch=taken.epoch)).status == Status.UNCHANGED
    assert len(rec.owned_keys(policy)) == 930


def ring(k: int) -> dict[str, list[str]]:
    """Each region's k next regions (wrapping) as its neighbours."""
    return {n: [NAMES[(i + j) % 30] for j in range(1, k + 1)] for i, n in enumerate(NAMES)}


def test_neighbour_sized_pools_grow_as_regions_times_k_plus_one(
    route53: Any, hosted_zone: dict[str, str], moto: Any
) -> None:
    """With 3 neighbours each, 30 regions bootstrap 150 records (30 × 4 members + 30 aliases) in 3 batches; a
    spill beyond the neighbours creates just that member, and moving back sets it to weight 0 (kept, not deleted)."""
    policy = make_policy(
        hosted_zone["id"], hosted_zone["name"], endpoint_url=moto.url, regions=REGIONS, neighbours=ring(3)
    )
    provider = Route53Provider(policy, route53)
    boot = provider.bootstrap(context=ctx())
    assert boot.status == Status.APPLIED and len(boot.changes) == 150 and boot.batches == 3
    assert len(provider.owned_records()) == 150 and provider.current_matrix() == identity_matrix(NAMES)
    far = NAMES[15]  # not a neighbour of r00: the planner's last resort
    spill = {**identity_matrix(NAMES), "r00": {"r00": 0.5, far: 0.5}}
    epoch = provider.take_over(context=ctx()).epoch
    sent = provider.reconcile(spill, context=ctx(epoch=epoch))
    created = [c.after.set_identifier for c in sent.changes if c.before is None]
    assert sent.status == Status.APPLIED and created == [f"r00-to-{far}"]
    back = provider.reconcile(identity_matrix(NAMES), context=ctx(epoch=epoch))
    weights = {c.after.set_identifier: c.after.weight for c in back.changes}
    assert back.status == Status.APPLIED and weights == {"r00-to-r00": 255, f"r00-to-{far}": 0}
    assert len(provider.owned_records()) == 151 and provider.current_matrix() == identity_matrix(NAMES)


def test_a_reconcile_reads_only_the_owned_names(route53: Any, hosted_zone: dict[str, str], moto: Any) -> None:
    """Foreign records outside the record name's range are not listed: an unchanged reconcile is one list call
    even with 700 foreign records in the zone (a whole-zone listing would take 3 pages)."""
    policy = make_policy(
        hosted_zone["id"], hosted_zone["name"], endpoint_url=moto.url, regions=REGIONS, neighbours=ring(3)
    )
    provider = Route53Provider(policy, route53)
    foreign = [
        {
            "Action": "CREATE",
            "ResourceRecordSet": {
                "Name": f"host{i}.{zone}",
                "Type": "A",
                "TTL": 60,
                "ResourceRecords": [{"Value": "192.0.2.1"}],
            },
        }
        for zone in (f"aaa.{hosted_zone['name']}", f"zzz.{hosted_zone['name']}")
        for i in range(350)
    ]
    for i in range(0, len(foreign), 100):
        route53.change_resource_record_sets(
            HostedZoneId=hosted_zone["id"], ChangeBatch={"Changes": foreign[i : i + 100]}
        )
    provider.bootstrap(context=ctx())
    result = provider.reconcile(identity_matrix(NAMES), context=ctx())
    assert result.status == Status.UNCHANGED and result.api_calls == 1
    assert all(
        r.name.startswith(("api.", "_trafficd-epoch.")) or ".pool.api." in r.name for r in provider.read_owned()[0]
    )
