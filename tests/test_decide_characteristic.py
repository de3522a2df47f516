"""The trip rule's operating characteristic: exact run lengths, derived thresholds, `policy check`, the benchmark."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
from judgekit import make_policy

from trafficd.decide import characteristic as ch

ROOT = Path(__file__).resolve().parents[1]


def _simulated_arl(llr: ch.Llr, h: float, p: float, runs: int, rng: random.Random) -> float:
    total = 0
    for _ in range(runs):
        s, n = 0.0, 0
        while s < h:
            n += 1
            s = max(0.0, s + (llr.over if rng.random() < p else llr.within))
        total += n
    return total / runs


def test_exact_run_length_matches_a_simulation_of_the_cusum() -> None:
    """The recurrence's average run length agrees with a per-probe simulation within its sampling error."""
    llr = ch.Llr(0.005, 0.02)
    rng = random.Random(7)
    for h, p in ((2.0, 0.005), (3.0, 0.02), (6.0, 0.05)):  # run lengths of 100–1,000 probes: a quick check
        exact = ch.arl(llr, h, p)
        sim = _simulated_arl(llr, h, p, 1500, rng)
        assert sim == pytest.approx(exact, rel=0.08), (h, p)
    high = ch.Llr(0.5, 0.99)  # high rates: the up step is the smaller one (the walk is skip-free upwards)
    for h, p in ((3.0, 0.5), (5.0, 0.6)):
        assert _simulated_arl(high, h, p, 1500, rng) == pytest.approx(ch.arl(high, h, p), rel=0.08), (h, p)


def test_threshold_meets_the_budget_and_is_the_smallest_that_does() -> None:
    """threshold(p0, p1, N) gives ARL ≥ N at the healthy rate, and 0.05 less would not."""
    llr = ch.Llr(0.005, 0.02)
    h = ch.threshold(0.005, 0.02, 5e7)
    assert ch.arl(llr, h, 0.005) >= 5e7 > ch.arl(llr, h - 0.05, 0.005)


def test_default_policy_promises_the_issue_targets() -> None:
    """At the default probe rate: 2 % over drained in ≤ 6 min on average, a stall within deadline + one
    evaluation (+ the few failures it takes), and the false-trip budget met."""
    c = ch.characteristic(make_policy(probe={"interval": "250ms"}), "us-east")
    assert c.budget_met and c.false_trips_per_period <= 1.0
    assert c.detection_delay_s <= 360 and c.detection_delay_s <= 1.1 * c.wald_delay_s + 10
    assert c.stall_delay_s <= 30 + 10 + 5


def test_policy_check_prints_the_characteristic_per_region() -> None:
    """`policy check` prints each region's delay at the breach rate, for a stall, and false trips per period."""
    res = subprocess.run(
        [sys.executable, "-m", "trafficd", "policy", "check", str(ROOT / "policies" / "example.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    lines = [x for x in res.stdout.splitlines() if x.startswith("  region ")]
    assert len(lines) == 3
    assert all("drained after" in x and "hard stall" in x and "false trips per 90 d" in x for x in lines)


def test_policy_check_warns_when_the_budget_costs_too_much_delay(tmp_path: Path) -> None:
    """A very slow probe rate meets the budget only with a long delay: a warning that --warnings-as-errors fails."""
    text = (ROOT / "policies" / "example.yaml").read_text().replace("interval: 1s ", "interval: 20s")
    path = tmp_path / "slow.yaml"
    path.write_text(text)
    path.chmod(0o600)
    base = [sys.executable, "-m", "trafficd", "policy", "check", str(path)]
    res = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "the false-trip budget is met only with" in res.stderr
    res = subprocess.run([*base, "--warnings-as-errors"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "INVALID (warnings are errors)" in res.stdout


def test_bench_decisions_quick_runs_and_reports_every_point() -> None:
    """`python -m trafficd.dev bench-decisions --quick --json` runs the real judge and reports every point."""
    res = subprocess.run(
        [sys.executable, "-m", "trafficd.dev", "bench-decisions", "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    conditions = {(r["condition"], r["shape"]) for r in out["rows"]}
    kinds = {r["kind"] for r in out["rows"]}
    assert len(conditions) == 28 and ("hard stall", "two-peaked") in conditions
    assert kinds == {"false", "detect", "fail_open", "swap", "episode_healthy", "episode_stays"}
    stall = [r for r in out["rows"] if r["condition"] == "hard stall"]
    assert all(r["detected_percent"] == 100.0 and r["p99_s"] <= 30 + 10 + 10 for r in stall)
    assert all(r["max_drained_exceeded"] == 0 for r in out["rows"] if r["kind"] == "swap")


def test_a_stall_is_expected_to_trip_from_the_slo_threshold_not_the_deadline() -> None:
    """Hung probes count over the SLO when they pass it (early records): the promised stall delay is the SLO
    threshold + the failures it takes + one evaluation, not the 30 s deadline; a deadline under the SLO bounds it."""
    policy = make_policy(probe={"interval": "250ms"})
    c = ch.characteristic(policy, "us-east")
    failures = math.ceil(c.threshold / ch.Llr(0.005, 0.02).over) / c.probes_per_s
    step = policy.windows.evaluate_every
    assert policy.probe.deadlines.total == 30.0
    assert c.stall_delay_s == pytest.approx(policy.slo.total_p99 + failures + step)
    short = make_policy(
        probe={"interval": "250ms", "deadlines": {"total": "1s", "first_token": "1s", "connect": "1s", "gap": "1s"}}
    )
    assert ch.characteristic(short, "us-east").stall_delay_s == pytest.approx(1.0 + failures + step)


def test_bench_upper_bound_is_the_exact_clopper_pearson_end() -> None:
    """The bench's 95 % upper bound for k of n is the p at which k or fewer are seen with probability 2.5 %."""
    from trafficd.dev.bench.decisions import upper_bound_95

    for k, n in ((0, 334), (3, 334), (11, 6000)):
        p = upper_bound_95(k, n)
        tail = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))
        assert tail == pytest.approx(0.025, rel=1e-6)
    assert upper_bound_95(0, 334) == pytest.approx(1 - 0.025 ** (1 / 334), rel=1e-9)
    assert upper_bound_95(5, 5) == 1.0
