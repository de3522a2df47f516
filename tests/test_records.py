"""records.py and the Route 53 wire format, pure: desired records for both topologies, weights, diff, validation,
batches, plan idempotency, conversions, the writer epoch."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from dns_fixtures import make_policy
from hypothesis import given, settings
from hypothesis import strategies as st

from trafficd.dns import fence
from trafficd.dns import records as rec
from trafficd.dns.route53 import wire
from trafficd.dns.route53.wire import LIMITS
from trafficd.model import Record, TrafficMatrix, identity_matrix
from trafficd.policy.schema import Policy

REGIONS = ["us-east", "eu-west", "ap-southeast"]
POLICY = make_policy()
WEIGHTED = make_policy(topology="weighted")
API = "api.example.com."


def apply(zone: list[Record], plan: rec.Plan) -> list[Record]:
    """The zone after every batch of the plan (what Route 53 would do)."""
    return rec.apply_changes(zone, plan.changes)


def desired_of(policy: Policy, matrix: TrafficMatrix) -> list[Record]:
    return rec.desired_records(policy, matrix, max_weight=255)


def plan_of(policy: Policy, matrix: TrafficMatrix, zone: list[Record], **kw: object) -> rec.Plan:
    return rec.plan(policy, matrix, zone, LIMITS, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("shares", "expected"),
    [
        ([1.0, 0.0, 0.0], [255, 0, 0]),
        ([0.5, 0.5], [128, 128]),
        ([0.25, 0.75], [64, 191]),
        ([0.001, 0.001, 0.998], [0, 0, 254]),
        ([0.001, 0.0005], [1, 0]),  # would round to all zero: the largest gets 1
        ([0.0, 0.0], None),  # nothing positive: hold
        ([math.nan, 1.0], [0, 255]),
        ([-0.2, 1.3], [0, 255]),
    ],
)
def test_scaled_weights(shares: list[float], expected: list[int] | None) -> None:
    """Weights are round(255 × share), clamped, never all zero, None when no share is positive."""
    assert rec.scaled_weights(shares, 255) == expected


def test_latency_weighted_shape() -> None:
    """One latency alias per region to its pool, and N members per pool named `{R}-to-{D}`, pools first."""
    desired = desired_of(POLICY, identity_matrix(REGIONS))
    assert len(desired) == 3 + 9
    aliases = [r for r in desired if r.name == API]
    assert desired[-3:] == aliases
    assert aliases[1] == Record(
        API, "CNAME", "eu-west", region="eu-west-1", alias_target="eu-west.pool.api.example.com."
    )
    pool = {r.set_identifier: r for r in desired if r.name == "us-east.pool.api.example.com."}
    assert {k: (v.weight, v.values) for k, v in pool.items()} == {
        "us-east-to-us-east": (255, ("us-east.lb.example.net.",)),
        "us-east-to-eu-west": (0, ("eu-west.lb.example.net.",)),
        "us-east-to-ap-southeast": (0, ("ap-southeast.lb.example.net.",)),
    }
    assert all(r.ttl == 60 for r in pool.values())


def test_missing_row_holds_its_pool() -> None:
    """A source region absent from the matrix gets no pool records (its current ones hold); its alias stays."""
    desired = desired_of(POLICY, {"us-east": {"eu-west": 1.0}})
    assert {r.name for r in desired} == {API, "us-east.pool.api.example.com."}


def test_plain_weighted_uses_column_sums() -> None:
    """Weighted topology: weight ∝ share of all users sent to each region, the largest scaled to 255."""
    matrix = {"us-east": {"eu-west": 1.0}, "eu-west": {"eu-west": 1.0}, "ap-southeast": {"ap-southeast": 1.0}}
    desired = desired_of(WEIGHTED, matrix)
    assert [(r.name, r.set_identifier, r.weight, r.region) for r in desired] == [
        (API, "us-east", 0, None),
        (API, "eu-west", 255, None),
        (API, "ap-southeast", 128, None),
    ]
    assert desired_of(WEIGHTED, {r: {} for r in REGIONS}) == []


def test_policy_names_set_identifiers_pool_template_and_address_records() -> None:
    """SetIdentifiers, the pool template and A/AAAA values come from the policy, normalized."""
    policy = make_policy(
        regions={"a": ("2001:DB8::0001", "us-east-1"), "b": ("2001:db8::2", "eu-west-1")},
        record_type="AAAA",
        pool_name="{region}-pool.Example.ORG",
    )
    policy = policy.model_copy(
        update={
            "regions": {
                **policy.regions,
                "a": policy.regions["a"].model_copy(
                    update={"dns": policy.regions["a"].dns.model_copy(update={"set_identifier": "alpha"})}
                ),
            }
        }
    )
    desired = desired_of(policy, identity_matrix(["a", "b"]))
    pool_a = [r for r in desired if r.name == "a-pool.example.org."]
    assert [(r.set_identifier, r.values) for r in pool_a] == [
        ("alpha-to-alpha", ("2001:db8::1",)),
        ("alpha-to-b", ("2001:db8::2",)),
    ]
    assert rec.owned_keys(policy) >= {(API, "AAAA", "alpha"), ("b-pool.example.org.", "AAAA", "b-to-alpha")}


def r(
    name: str,
    sid: str,
    weight: int | None = None,
    region: str | None = None,
    *,
    type: str = "CNAME",
    alias_target: str | None = None,
) -> Record:
    """A record for the validation table: an alias when `alias_target` is given, else TTL 60 and one value."""
    if alias_target is not None:
        return Record(name, type, sid, weight=weight, region=region, alias_target=alias_target)
    return Record(name, type, sid, weight=weight, region=region, ttl=60, values=("x.example.net.",))


P = "p.example.com."


@pytest.mark.parametrize(
    ("changes", "zone", "problem"),
    [
        ([r(P, "a", 256)], [], "weight 256 is not an integer in 0–255"),
        ([r(P, "a", -1), r(P, "b", 3)], [], "weight -1 is not an integer in 0–255"),
        ([r(P, "a", 0)], [r(P, "b", 0)], "p.example.com. CNAME: every weight would be zero"),
        ([r(P, "a", 1), r(P, "a", 2)], [], "changed twice in one batch"),
        ([r(P, "a", 1)], [r(P, "b", region="us-east-1")], "mixed routing types (latency, weighted)"),
        ([r(P, "a", 1)], [r(P, "", None)], "mixed routing types (simple, weighted)"),
        ([r(P, "a", 1)], [r(P, "", type="TXT")], "CNAME beside other types (TXT)"),
        (
            [r(API, "a", region="us-east-1", alias_target="nope.example.com.")],
            [],
            "alias target nope.example.com. CNAME does not exist",
        ),
        ([replace(r(P, "a", 1), ttl=None)], [], "needs a TTL and values"),
        ([r(f"n{i}.example.com.", "a", 1) for i in range(101)], [], "101 changes in one batch (at most 100)"),
    ],
)
def test_validate_refuses_what_route53_would(changes: list[Record], zone: list[Record], problem: str) -> None:
    """Each invalid batch is refused with a message naming the problem (moto would accept them all)."""
    problems = rec.validate([rec.Change(None, c) for c in changes], zone, LIMITS)
    assert any(problem in p for p in problems), problems


def test_validate_accepts_a_good_batch_beside_foreign_records() -> None:
    """Zero weights are fine beside a weighted foreign member; an alias to a pool in the same batch is fine."""
    changes = [rec.Change(None, c) for c in (r(P, "a", 0), r(API, "x", region="us-east-1", alias_target=P))]
    assert rec.validate(changes, [r(P, "foreign", 5)], LIMITS) == []


DRAIN = {
    "us-east": {"us-east": 0.25, "eu-west": 0.75},
    "eu-west": {"eu-west": 1.0},
    "ap-southeast": {"ap-southeast": 0.5, "us-east": 0.5},
}


@pytest.mark.parametrize("policy", [POLICY, WEIGHTED], ids=["latency-weighted", "weighted"])
def test_plan_then_replan_is_empty(policy: Policy) -> None:
    """Applying a plan and planning again yields no changes (idempotent), from empty and from another state."""
    zone: list[Record] = []
    for matrix in (identity_matrix(REGIONS), DRAIN, identity_matrix(REGIONS)):
        planned = plan_of(policy, matrix, zone)
        assert planned.ok, planned.problems
        zone = apply(zone, planned)
        assert plan_of(policy, matrix, zone).changes == ()


def test_plan_only_touches_owned_and_skips_respected() -> None:
    """Foreign records are never in a plan, equal records are not rewritten, respected keys are left alone."""
    zone = apply([], plan_of(POLICY, identity_matrix(REGIONS), []))
    foreign = [r("us-east.pool.api.example.com.", "manual", 9), r(API, "", type="TXT")]
    plan = plan_of(POLICY, DRAIN, zone + foreign)
    keys = {c.after.key for c in plan.changes}
    assert keys <= rec.owned_keys(POLICY)
    assert {k[2] for k in keys} == {
        "us-east-to-us-east",
        "us-east-to-eu-west",
        "ap-southeast-to-ap-southeast",
        "ap-southeast-to-us-east",
    }
    respected = ("ap-southeast.pool.api.example.com.", "CNAME", "ap-southeast-to-us-east")
    skipped = plan_of(POLICY, DRAIN, zone, respected=[respected])
    assert respected not in {c.after.key for c in skipped.changes} and skipped.respected == (respected,)


def test_large_plans_are_split_into_valid_batches_by_whole_pools() -> None:
    """11 regions need 132 records: batches of whole names within 100 changes, the aliases in a batch of their own
    after their pools, each valid."""
    names = [f"r{i}" for i in range(11)]
    policy = make_policy(regions={n: (f"{n}.lb.example.net", "us-east-1") for n in names})
    first = plan_of(policy, identity_matrix(names), [])
    assert first.ok and len(first.changes) == 132
    assert [len(b.changes) for b in first.batches] == [99, 22, 11]
    assert [b.after_insync for b in first.batches] == [False, False, True]  # aliases once their pools are INSYNC
    for b in first.batches:  # no name is split across batches
        assert all(
            {c.after.name for c in b.changes}.isdisjoint({c.after.name for c in o.changes})
            for o in first.batches
            if o is not b
        )
    assert plan_of(policy, identity_matrix(names), apply([], first)).changes == ()


def test_replacing_records_counts_delete_and_create() -> None:
    """A batch replacing records counts two changes each (DELETE + CREATE), plus the epoch assertion at its head."""
    names = [f"r{i}" for i in range(10)]
    policy = make_policy(regions={n: (f"{n}.lb.example.net", "us-east-1") for n in names})
    zone = apply([], plan_of(policy, identity_matrix(names), []))
    epoch = fence.epoch_record(policy, 3)
    assertion = rec.Change(epoch, epoch)
    drained = {n: {m: 1.0 / len(names) for m in names} for n in names}
    replan = plan_of(policy, drained, [*zone, epoch], fence=assertion)
    assert replan.ok and len(replan.changes) == 100  # every member of every pool: 255→26, 0→26
    for b in replan.batches:
        assert b.changes[0] is assertion
        assert len(wire.change_actions(b.changes, "Z")) <= 100


def test_value_size_limit_splits_batches() -> None:
    """A batch never carries more value characters than the provider allows."""
    names = [f"r{i}" for i in range(4)]
    policy = make_policy(regions={n: (f"{n}-{'x' * 50}.lb.example.net", "us-east-1") for n in names})
    small = rec.Limits(max_weight=255, max_changes=100, max_values=1000, max_value_chars=300)
    first = rec.plan(policy, identity_matrix(names), [], small)
    assert first.ok and len(first.batches) > 1
    assert all(rec._size(b.changes)[2] <= 300 for b in first.batches)


def test_epoch_record_round_trip() -> None:
    """The writer epoch lives in one TXT record; a foreign value there reads as no epoch."""
    record = fence.epoch_record(POLICY, 7)
    assert record.name == "_trafficd-epoch.api.example.com." and record.type == "TXT"
    assert fence.epoch_from(POLICY, [record]) == (record, 7)
    foreign = replace(record, values=('"hello"',))
    assert fence.epoch_from(POLICY, [foreign]) == (foreign, None)
    assert fence.epoch_from(POLICY, []) == (None, None)


def test_rrset_conversion_round_trip_and_normalization() -> None:
    """ResourceRecordSet dicts convert to Records (lower case, trailing dots) and back to what we send."""
    listed = {
        "Name": "US-East.Pool.API.example.com",
        "Type": "CNAME",
        "SetIdentifier": "s",
        "Weight": 7,
        "TTL": 60,
        "ResourceRecords": [{"Value": "EU.lb.example.net"}],
    }
    record = wire.record_from_rrset(listed)
    assert record == Record(
        "us-east.pool.api.example.com.", "CNAME", "s", weight=7, ttl=60, values=("eu.lb.example.net.",)
    )
    assert wire.record_from_rrset(wire.rrset_from_record(record, "Z1")) == record
    alias = Record(API, "CNAME", "us", region="us-east-1", alias_target="us.pool.api.example.com.")
    sent = wire.rrset_from_record(alias, "Z1")
    assert sent["AliasTarget"] == {
        "HostedZoneId": "Z1",
        "DNSName": "us.pool.api.example.com.",
        "EvaluateTargetHealth": False,
    }
    assert "TTL" not in sent and wire.record_from_rrset(sent) == alias
    batch = wire.change_batch([rec.Change(None, alias), rec.Change(record, replace(record, weight=8))], "Z1")
    assert [c["Action"] for c in batch["Changes"]] == ["CREATE", "DELETE", "CREATE"]  # never UPSERT
    assert batch["Changes"][1]["ResourceRecordSet"]["Weight"] == 7  # the record exactly as read


def test_matrix_from_records_reads_back_the_weights() -> None:
    """The matrix expressed by the records is the one written, to rounding."""
    records = desired_of(POLICY, DRAIN)
    back = rec.matrix_from_records(POLICY, records)
    assert back["us-east"] == pytest.approx({"us-east": 64 / 255, "eu-west": 191 / 255, "ap-southeast": 0.0})
    assert back["ap-southeast"]["us-east"] == pytest.approx(0.5)


def test_detect_drift_reports_changes_and_deletions() -> None:
    """A record that differs from what we expected, or vanished, is drift with before and after."""
    a, b = r(P, "a", 1), r(P, "b", 2)
    drift = rec.detect_drift({a.key: a, b.key: b}, {a.key: replace(a, weight=9)})
    assert [(d.before, d.after) for d in drift] == [(a, replace(a, weight=9)), (b, None)]


fractions = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
matrices = st.fixed_dictionaries({src: st.fixed_dictionaries({dst: fractions for dst in REGIONS}) for src in REGIONS})


@settings(max_examples=150, deadline=None)
@given(first=matrices, second=matrices, weighted=st.booleans())
def test_plans_are_idempotent_and_never_all_zero(first: TrafficMatrix, second: TrafficMatrix, weighted: bool) -> None:
    """For any matrices: every planned batch is valid, never all-zero per name, and re-planning is empty."""
    policy = WEIGHTED if weighted else POLICY
    zone = apply([], plan_of(policy, identity_matrix(REGIONS), []))
    for matrix in (first, second):
        planned = plan_of(policy, matrix, zone)
        assert planned.ok, planned.problems
        zone = apply(zone, planned)
        assert plan_of(policy, matrix, zone).changes == ()
        for name in {x.name for x in zone if x.weight is not None}:
            assert sum(x.weight or 0 for x in zone if x.name == name) > 0
