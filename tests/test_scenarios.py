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

from trafficd.commands import simulate
from trafficd.policy.schema import Policy, load_policy

SCENARIOS = Path(__file__).parent / "scenarios"
NAMES = sorted(p.name for p in SCENARIOS.iterdir() if (p / "timeline.jsonl").exists())
EPS = 1e-9


def replay(name: str) -> tuple[Policy, list[dict[str, Any]]]:
    policy = load_policy(SCENARIOS / name / "policy.yaml").policy
    with open(SCENARIOS / name / "timeline.jsonl", encoding="utf-8") as f:
        moments = simulate.parse_timeline(policy, f)
    return policy, list(simulate.rows(policy, moments))


def by_key(rows: list[dict[str, Any]]) -> dict[tuple[float, str], dict[str, Any]]:
    return {(r["t"], r["region"]): r for r in rows}


def test_every_listed_scenario_is_present() -> None:
    """The issue's eight scenarios all exist as data files."""
    assert NAMES == [
        "all_breaching_fail_open",
        "capacity_spill_over",
        "manual_drain_expiring",
        "one_region_breach_recover",
        "oscillating_p99",
        "stale_agent",
        "too_few_samples",
        "two_of_three_max_drained",
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
    assert fo and all(any("fail open: 3 of 3 regions breaching" in x for x in r["reasons"]) for r in fo)
    us = by_key(rows)
    assert us[(10, "us-east")]["serving_fraction"] == 0.5 and us[(20, "us-east")]["serving_fraction"] == 1.0


def test_oscillation_is_damped() -> None:
    """Alternating breaches never move traffic; slow cycles trip with a growing hold-down and few changes."""
    _, rows = replay("oscillating_p99")
    us = [r for r in rows if r["region"] == "us-east"]
    assert all(r["serving_fraction"] == 1.0 for r in us if r["t"] < 100)
    trips = [r for r in us if r["rule"] in ("trip", "retrip")]
    assert [r["t"] for r in trips] == [110, 170]
    assert "hold-down 30s" in trips[0]["reasons"][-1] and "hold-down 60s" in trips[1]["reasons"][-1]
    changes = sum(1 for a, b in itertools.pairwise(us) if a["serving_fraction"] != b["serving_fraction"])
    cycles = (400 - 100) // 60
    assert changes <= cycles  # without damping each 60 s cycle would move traffic twice
    assert any(r["decided_by"] == "hold_down" for r in us)


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
    assert res.returncode == 1 and f"{bad}:2: region 'mars' is not in the policy" in res.stderr
    pol = tmp_path / "p.yaml"
    pol.write_text("version: 1\n")
    res = subprocess.run([*cmd[:5], str(pol), *cmd[6:]], capture_output=True, text=True, timeout=60)
    assert res.returncode == 78


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"region": "us-east"}', "missing field 't'"),
        ('{"t": 1, "override": "drain", "region": "us-east"}', "a drain needs 'for'"),
        ('{"t": 1, "override": "nap"}', "override must be drain, undrain, freeze or unfreeze"),
        ('{"t": 1, "override": "freeze", "for": "5"}', "unit"),
        ("not json", "Expecting value"),
    ],
)
def test_timeline_errors(line: str, message: str) -> None:
    """Each malformed timeline line is rejected with a message naming the line and the problem."""
    policy = load_policy(SCENARIOS / "one_region_breach_recover" / "policy.yaml").policy
    with pytest.raises(simulate.TimelineError, match=r"^tl:1: ") as err:
        simulate.parse_timeline(policy, [line], "tl")
    assert message in str(err.value)
