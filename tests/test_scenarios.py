"""Scenario files (policy + timeline of window stats → expected states and weights) replayed through simulate.

Each directory in tests/scenarios holds `policy.yaml`, `timeline.jsonl` (the `trafficd simulate` input) and
`expected.jsonl` (state, serving fraction, weights and the deciding rule or guard, per evaluation and region).
Every scenario also has to keep the invariants: rows sum to 1, steps ≤ max_step, steps ≥ cooldown apart,
at most max_drained shedding, never all regions at zero.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from trafficd.commands import simulate_replay as simulate
from trafficd.commands.simulate_input import read_samples
from trafficd.policy.schema import Policy, load_policy

SCENARIOS = Path(__file__).parent / "scenarios"
NAMES = sorted(p.name for p in SCENARIOS.iterdir() if (p / "timeline.jsonl").exists() or (p / "samples.jsonl").exists())
EPS = 1e-9


def replay(name: str) -> tuple[Policy, list[dict[str, Any]]]:
    policy = load_policy(SCENARIOS / name / "policy.yaml").policy
    probes = SCENARIOS / name / "samples.jsonl"
    if probes.exists():  # probe level: the store's slice/window code, then the judge
        with open(probes, encoding="utf-8") as f:
            return policy, list(simulate.sample_rows(policy, read_samples(policy, f, str(probes))))
    with open(SCENARIOS / name / "timeline.jsonl", encoding="utf-8") as f:
        moments = simulate.parse_timeline(policy, f)
    return policy, list(simulate.rows(policy, moments))


def by_key(rows: list[dict[str, Any]]) -> dict[tuple[float, str], dict[str, Any]]:
    return {(r["t"], r["region"]): r for r in rows}


def test_every_listed_scenario_is_present() -> None:
    """The eight original scenarios and one per bullet of the sequential rule (issue 10) exist as data files."""
    assert NAMES == [
        "all_breaching_fail_open",
        "capacity_spill_over",
        "every_region_two_to_three_percent_moves_nothing",
        "flapping_region_waits_out_the_flap_window",
        "global_episode_then_fresh_evidence",
        "hard_stall_probe_level",
        "healthy_rate_never_drains",
        "intermittent_stale_keeps_evidence",
        "manual_drain_expiring",
        "one_region_breach_recover",
        "oscillating_p99",
        "recovery_on_evidence_not_p99",
        "stale_agent",
        "too_few_samples",
        "ttft_and_errors_on_the_same_evidence",
        "two_of_three_max_drained",
        "uneven_global_onset_moves_nothing",
        "worse_evidence_takes_the_slot",
    ]


@pytest.mark.parametrize("name", NAMES)
def test_scenario_matches_expected(name: str) -> None:
    """Replaying the timeline gives exactly the expected state, fraction, weights and decider at every point."""
    _, rows = replay(name)
    got = by_key(rows)
    expected = [json.loads(line) for line in (SCENARIOS / name / "expected.jsonl").read_text().splitlines()]
    assert expected
    for exp in expected:
        row = got[(exp["t"], exp["region"])]
        where = f"{name} t={exp['t']} {exp['region']}"
        assert row["state"] == exp["state"], where
        assert row["serving_fraction"] == pytest.approx(exp["serving_fraction"]), where
        weights = {dst: exp["weights"].get(dst, 0.0) for dst in row["weights"]}
        assert row["weights"] == pytest.approx(weights), where
        assert row["decided_by"] == exp["decided_by"], where


@pytest.mark.parametrize("name", NAMES)
def test_scenario_keeps_the_invariants(name: str) -> None:
    """Rows sum to 1, steps ≤ max_step and ≥ cooldown apart, ≤ max_drained shedding, never all zero."""
    policy, rows = replay(name)
    last_step: dict[str, float] = {}
    prev: dict[str, float] = defaultdict(lambda: 1.0)
    at: dict[float, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        at[r["t"]].append(r)
        assert sum(r["weights"].values()) == pytest.approx(1.0, abs=1e-9)
        assert all(-EPS <= w <= 1.0 + EPS for w in r["weights"].values())
        s = r["serving_fraction"]
        assert policy.ramp.min_fraction - EPS <= s <= 1.0 + EPS
        if abs(s - prev[r["region"]]) > EPS:
            assert abs(s - prev[r["region"]]) <= policy.ramp.max_step + EPS
            if r["region"] in last_step:
                assert r["t"] - last_step[r["region"]] >= policy.ramp.cooldown - EPS
            last_step[r["region"]] = r["t"]
        prev[r["region"]] = s
    for rs in at.values():
        assert any(r["serving_fraction"] > EPS for r in rs)
        assert sum(1 for r in rs if r["serving_fraction"] < 1.0 - EPS) <= policy.guards.max_drained


def test_fail_open_says_so_and_restores() -> None:
    """All three breaching: the drained region is ramped back by fail_open and every reason names it."""
    _, rows = replay("all_breaching_fail_open")
    fo = [r for r in rows if r["decided_by"] == "fail_open"]
    assert fo and all(any("fail open: at least 75% of the regions" in x for x in r["reasons"]) for r in fo)
    us = by_key(rows)
    assert us[(10, "us-east")]["serving_fraction"] == 0.5 and us[(20, "us-east")]["serving_fraction"] == 1.0


def test_oscillation_is_damped() -> None:
    """Exceedance alternating 4 % / 0.4 % (2.2 % on average, above the breach rate) trips once and stays drained
    through the slow/good cycles that follow: accumulated evidence does not flap with each window."""
    _, rows = replay("oscillating_p99")
    us = [r for r in rows if r["region"] == "us-east"]
    trips = [r for r in us if r["rule"] in ("trip", "retrip")]
    assert len(trips) == 1
    changes = sum(1 for a, b in itertools.pairwise(us) if a["serving_fraction"] != b["serving_fraction"])
    assert changes <= 2  # 1.0 → 0.5 → 0.0, never back up while the cycles go on


def test_cli_prints_the_same_rows() -> None:
    """`trafficd simulate` prints exactly the rows the function produces, one JSON object per line."""
    name = "one_region_breach_recover"
    _, rows = replay(name)
    d = SCENARIOS / name
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "trafficd",
            "simulate",
            "--policy",
            str(d / "policy.yaml"),
            "--timeline",
            str(d / "timeline.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert [json.loads(line) for line in out.splitlines()] == rows
    first = rows[0]
    for key in ("t", "region", "state", "serving_fraction", "weights", "decided_by"):
        assert key in first


def test_cli_names_the_bad_timeline_line(tmp_path: Path) -> None:
    """A bad timeline line exits 1 with file:line and the reason; a bad policy exits 78."""
    d = SCENARIOS / "one_region_breach_recover"
    bad = tmp_path / "t.jsonl"
    bad.write_text('{"t": 0, "region": "us-east", "n": 10}\n{"t": 10, "region": "mars", "n": 1}\n')
    cmd = [sys.executable, "-m", "trafficd", "simulate", "--policy", str(d / "policy.yaml"), "--timeline", str(bad)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and f'{bad}:2: region: "mars" is not a region of the policy' in res.stderr
    pol = tmp_path / "p.yaml"
    pol.write_text("version: 1\n")
    res = subprocess.run([*cmd[:5], str(pol), *cmd[6:]], capture_output=True, text=True, timeout=60)
    assert res.returncode == 78


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"region": "us-east"}', "t: missing; give a number"),
        ('{"t": NaN, "region": "us-east", "n": 10}', "NaN is not a number JSON allows"),
        ('{"t": 1, "region": "us-east", "n": 10, "over_slo": Infinity}', "Infinity is not a number JSON allows"),
        ('{"t": 1, "region": "us-east", "n": 10, "over_slo": 1e999}', "over_slo: inf is not a finite number"),
        ('{"t": true, "region": "us-east", "n": 10}', "t: expected a number, got true"),
        ('{"t": 1, "region": "us-east", "n": 10, "over_sol": 0.5}', "over_sol: unknown field in a window line"),
        ('{"t": 1, "region": "us-east", "n": 10, "over_slo": 1.5}', "over_slo: 1.5 is out of range"),
        ('{"t": 1, "region": "us-east", "n": -3}', "n: -3 is out of range"),
        ('{"t": 1, "t": 2, "region": "us-east", "n": 3}', "t: given twice in the same line"),
        ('{"t": 1, "override": "drain", "region": "us-east"}', "a drain needs 'for'"),
        ('{"t": 1, "override": "nap"}', "override: must be drain, undrain, freeze or unfreeze"),
        ('{"t": 1, "override": "freeze", "for": "5"}', "unit"),
        ("not json", "not JSON (Expecting value at column 1)"),
    ],
)
def test_timeline_errors(line: str, message: str) -> None:
    """Each malformed timeline line is rejected with a message naming the line and the problem."""
    policy = load_policy(SCENARIOS / "one_region_breach_recover" / "policy.yaml").policy
    with pytest.raises(simulate.TimelineError, match=r"^tl:1: ") as err:
        simulate.parse_timeline(policy, [line], "tl")
    assert message in str(err.value)


def _region(rows: list[dict[str, Any]], region: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["region"] == region]


def test_healthy_rate_never_drains() -> None:
    """Every region at the healthy rate (0.5 % over) for 20 min of probes: no weight moves, nothing trips."""
    _, rows = replay("healthy_rate_never_drains")
    assert rows and all(r["serving_fraction"] == 1.0 and r["rule"] != "trip" for r in rows)


def test_hard_stall_moves_weight_within_deadline_plus_one_evaluation() -> None:
    """Every probe timing out from 600 s: the first weight change comes ≤ 30 s deadline + one 10 s evaluation later."""
    policy, rows = replay("hard_stall_probe_level")
    us = _region(rows, "us-east")
    lines = (SCENARIOS / "hard_stall_probe_level" / "samples.jsonl").read_text().splitlines()
    onset = min(d["t"] for d in map(json.loads, lines) if not d["ok"])  # the first probe that hung
    first = next(r for r in us if r["serving_fraction"] < 1.0)
    # the latency evidence comes when each hung probe passes the 3 s SLO; their errors only at the 30 s deadline
    assert first["rule"] == "trip" and set(first["triggers"]) == {"latency"}
    assert onset < first["t"] <= onset + policy.probe.deadlines.total + policy.windows.evaluate_every
    assert all(r["serving_fraction"] == 1.0 for r in rows if r["region"] != "us-east")


def test_recovery_is_judged_on_exceedance_evidence() -> None:
    """p99 under the SLO while 1.5 % of probes are over it keeps a tripped region drained; at 0 % it recovers."""
    _, rows = replay("recovery_on_evidence_not_p99")
    us = _region(rows, "us-east")
    assert all(r["serving_fraction"] == 0.0 for r in us if 10 <= r["t"] < 400)
    assert us[-1]["state"] == "healthy" and us[-1]["serving_fraction"] == 1.0


def test_worse_evidence_takes_the_slot_ramped_and_logged() -> None:
    """A stall in eu-west takes the only max_drained slot from us-east's 3 % drain: us-east ramps back one step at a
    time (each step a logged max_drained swap), then eu-west drains; never two regions shedding at once."""
    _, rows = replay("worse_evidence_takes_the_slot")
    swaps = [r for r in rows if r["region"] == "us-east" and any("max_drained swap" in x for x in r["reasons"])]
    assert swaps and all(r["serving_fraction"] > r["serving_fraction_before"] for r in swaps)
    eu = _region(rows, "eu-west")
    assert eu[-1]["serving_fraction"] == 0.0
    by_t: dict[float, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_t[r["t"]].append(r)
    assert all(sum(1 for r in at if r["serving_fraction"] < 1.0) <= 1 for at in by_t.values())


def test_global_episode_moves_nothing_and_needs_fresh_evidence_after() -> None:
    """All regions at 2.5 % over for 5 min: fail open, no weight moves; us-east later trips on new evidence only."""
    _, rows = replay("global_episode_then_fresh_evidence")
    assert all(r["serving_fraction"] == 1.0 for r in rows if r["t"] < 600)
    assert any(r["decided_by"] == "global" for r in rows)
    trip = next(r for r in _region(rows, "us-east") if r["rule"] == "trip")
    assert trip["t"] >= 600


def test_intermittent_staleness_keeps_the_evidence() -> None:
    """5 % over with every second evaluation stale: the unknown evaluations hold, the evidence adds up, it trips."""
    _, rows = replay("intermittent_stale_keeps_evidence")
    us = _region(rows, "us-east")
    assert any(r["rule"] == "trip" for r in us)
    assert all(r["serving_fraction"] == r["serving_fraction_before"] for r in us if r["state"] == "unknown")


def test_ttft_and_errors_trip_and_recover_on_the_same_evidence() -> None:
    """TTFT over its SLO trips us-east (trigger ttft) and it recovers on evidence of the healthy rate; errors trip
    eu-west (trigger errors) the same way."""
    _, rows = replay("ttft_and_errors_on_the_same_evidence")
    us, eu = _region(rows, "us-east"), _region(rows, "eu-west")
    assert next(r for r in us if r["rule"] == "trip")["triggers"] == ["ttft"]
    assert next(r for r in eu if r["rule"] == "trip")["triggers"] == ["errors"]
    assert us[-1]["serving_fraction"] == 1.0 and eu[-1]["serving_fraction"] == 1.0
    assert any(r["rule"] == "recover" for r in us) and any(r["rule"] == "recover" for r in eu)


def test_uneven_global_onset_moves_nothing() -> None:
    """The region that reaches its threshold first waits while the others show evidence too (global problem
    suspected), the global episode follows: no weight moves at any time."""
    _, rows = replay("uneven_global_onset_moves_nothing")
    assert all(r["serving_fraction"] == 1.0 for r in rows)
    first = next(r for r in _region(rows, "us-east") if r["verdict"] == "breach")
    assert first["rule"] == "global" and any("global problem is suspected" in x for x in first["reasons"])


def test_every_region_at_two_to_three_percent_moves_nothing() -> None:
    """Every region at 2–3 % over for 30 min (probe level): the first region to reach its threshold waits while the
    others, pooled over its span, are not clearly healthy; the global episode follows; no weight ever moves."""
    _, rows = replay("every_region_two_to_three_percent_moves_nothing")
    assert all(r["serving_fraction"] == 1.0 for r in rows)
    first = next(r for r in rows if r["verdict"] == "breach")
    assert first["rule"] == "global" and any("global problem is suspected" in x for x in first["reasons"])
    assert any(r["rule"] == "global" and "most regions breach at once" in r["reasons"][-1] for r in rows)


def test_a_flapping_region_completes_one_cycle_per_flap_window() -> None:
    """A re-trip 190 s after the first restore is held drained until 10 min after that restore: one drain–restore
    cycle per recover.flap_window, the hold logged in the trip's reasons."""
    policy, rows = replay("flapping_region_waits_out_the_flap_window")
    us = _region(rows, "us-east")
    restores = [r["t"] for r in us if r["serving_fraction"] == 1.0 and r["serving_fraction_before"] < 1.0]
    trips = [r for r in us if r["rule"] == "trip"]
    assert len(trips) == 2 and any("flapping" in x for x in trips[1]["reasons"])
    assert len(restores) == 2 and restores[1] - restores[0] >= policy.recover.flap_window
