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
