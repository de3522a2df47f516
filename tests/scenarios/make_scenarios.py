"""Writes the scenario inputs of the sequential trip rule (issue 10's "what to build" bullets); run once, committed.

`python tests/scenarios/make_scenarios.py` regenerates policy.yaml + timeline.jsonl / samples.jsonl (deterministic);
expected.jsonl is then written from the replay after checking it by hand.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from pathlib import Path

HERE = Path(__file__).parent
REGIONS = ("us-east", "eu-west", "ap-southeast")
T0 = 1_700_000_000.0


def policy(title: str, extra: str = "", slo: str = "total_p99: 3s, error_rate: 1%", recover: str = "") -> str:
    regions = "\n".join(
        f'  {r}:\n    workers: [{{name: w1, url: "http://127.0.0.1:1"}}]\n'
        f"    dns: {{endpoint: {r}.lb.example.com, aws_region: {a}}}\n"
        f"    neighbours: [{', '.join(x for x in REGIONS if x != r)}]"
        for r, a in zip(REGIONS, ("us-east-1", "eu-west-1", "ap-southeast-1"), strict=True)
    )
    return (
        f"# scenario {title}\nversion: 1\nservice: scenario\nmodels: [{{name: m}}]\nregions:\n{regions}\n"
        f"slo: {{{slo}}}\n"
        "windows: {evaluate_every: 10s, slice: 10s, trip: 1m, long: 5m, stale_after: 30s}\n"
        f"recover: {{hold_down: 30s, hold_down_max: 10m{recover}}}\n"
        "ramp: {max_step: 50%, cooldown: 10s}\n"
        "guards: {min_serving_regions: 1, max_drained: 1, fail_open_share: 75%}\n"
        "dns: {zone_id: Z1, record_name: api.example.com.}\n" + extra
    )


def window(t: float, region: str, over: float, **kw: object) -> str:
    d: dict[str, object] = {"t": t, "region": region, "n": 1200, "over_slo": over, "error_rate": kw.pop("err", 0.0)}
    d.update(kw)
    return json.dumps(d)


LOOPBACK = "  # the scenario workers are placeholders on loopback\n"


def write(name: str, title: str, lines: list[str], kind: str = "timeline", extra: str = "", **policy_kw: str) -> None:
    d = HERE / name
    d.mkdir(exist_ok=True)
    probe = (
        "probe: {interval: 1s, targets: {allow_loopback: true}}"
        if extra
        else "probe: {targets: {allow_loopback: true}}"
    )
    (d / "policy.yaml").write_text(policy(f"{name}: {title}", **policy_kw) + probe + LOOPBACK)
    (d / f"{kind}.jsonl").write_text("\n".join(lines) + "\n")


def samples(rng: random.Random, seconds: int, rate: Mapping[str, object], every_s: float = 0.5) -> list[str]:
    """Probes every `every_s` per region; rate[r] = share over the SLO, or ("stall", onset_s)."""
    out = []
    for i in range(int(seconds / every_s)):
        for r in REGIONS:
            t = T0 + i * every_s + rng.random() * 0.05
            spec = rate.get(r, 0.005)
            if isinstance(spec, tuple) and t - T0 >= spec[1]:
                row = {"ok": False, "reason": "total_timeout", "total_ms": 30000.0, "ttft_ms": None}
            else:
                p = spec if isinstance(spec, float) else 0.005
                total = rng.uniform(3100.0, 5000.0) if rng.random() < p else rng.uniform(600.0, 1800.0)
                row = {"ok": True, "reason": None, "total_ms": round(total, 1), "ttft_ms": round(total * 0.2, 1)}
            out.append(json.dumps({"t": round(t, 3), "region": r, "worker": "w1", "model": "m", **row}))
    return out


def main() -> None:
    rng = random.Random(10)
    # 1. thresholds from the user's terms: a region at the healthy rate (0.5 %) for 30 min is never drained
    write(
        "healthy_rate_never_drains",
        "every region at 0.5 % over (the healthy rate) for 20 min, probe level: no weight ever moves",
        samples(rng, 1200, {}, every_s=1.0),
        "samples",
        "1s",
    )
    # 2. hard stall: every probe of us-east times out from t0 + 600 s; drained within deadline + one evaluation
    write(
        "hard_stall_probe_level",
        "us-east's probes all time out from 600 s (probe level): first weight change ≤ 30 s deadline + 10 s",
        samples(rng, 720, {"us-east": ("stall", 600.0)}, every_s=1.0),
        "samples",
        "1s",
    )
    # 3. recovery on exceedance evidence: p99 under the SLO but 1.5 % over → stays drained; at 0 % → recovers
    lines = []
    for t in range(0, 900, 10):
        over = 0.10 if t < 60 else (0.015 if t < 400 else 0.0)
        p99 = 4200 if t < 60 else 2900
        lines += [window(t, "us-east", over, p99_ms=p99)] + [window(t, r, 0.0, p99_ms=1500) for r in REGIONS[1:]]
    write(
        "recovery_on_evidence_not_p99",
        "us-east trips at 10 % over, then p99 2.9 s (under the SLO) but 1.5 % over: held; at 0 % it recovers",
        lines,
    )
    # 4. worse evidence takes the max_drained slot: us-east drained at 3 %, then eu-west stalls (100 % over)
    lines = []
    for t in range(0, 400, 10):
        lines.append(window(t, "us-east", 0.03, p99_ms=3300))
        lines.append(
            window(
                t, "eu-west", 1.0 if t >= 150 else 0.0, p99_ms=30000 if t >= 150 else 1500, err=1.0 if t >= 150 else 0.0
            )
        )
        lines.append(window(t, "ap-southeast", 0.0, p99_ms=1500))
    write(
        "worse_evidence_takes_the_slot",
        "us-east drained at 3 % over; eu-west stalls at 150 s: us-east ramps back (logged swap), eu-west drains",
        lines,
    )
    # 5. fail open over time: every region at 2.5 % for 5 min, then healthy; afterwards us-east needs new evidence
    lines = []
    for t in range(0, 900, 10):
        for r in REGIONS:
            over = 0.025 if t < 300 else (0.04 if r == "us-east" and t >= 600 else 0.0)
            lines.append(window(t, r, over, p99_ms=3200 if over else 1500))
    write(
        "global_episode_then_fresh_evidence",
        "all regions at 2.5 % over for 5 min (fail open, nothing moves), then healthy; us-east at 4 % from 600 s "
        "trips on its own new evidence",
        lines,
    )
    # 6. unknown keeps evidence: 5 % over with every second evaluation stale still trips
    lines = []
    for t in range(0, 300, 10):
        stale = (t // 10) % 2 == 1
        lines.append(window(t, "us-east", 0.05, p99_ms=3600, stale=stale))
        lines += [window(t, r, 0.0, p99_ms=1500) for r in REGIONS[1:]]
    write(
        "intermittent_stale_keeps_evidence",
        "us-east at 5 % over with every second evaluation stale: unknown holds but keeps the evidence; it trips",
        lines,
    )

    more_scenarios()
    fail_open_scenarios()


def more_scenarios() -> None:
    """The bullets added after the first six: TTFT and errors on the same evidence, a staggered global onset, and
    at most one drain–restore cycle per flap window."""
    # 7. errors and TTFT use the same machinery: us-east's TTFT over its SLO trips it (trigger ttft) and it recovers
    # on evidence; later eu-west's errors trip it (trigger errors)
    lines = []
    for t in range(0, 700, 10):
        ttft = 0.10 if t < 60 else 0.0
        err = 0.10 if 300 <= t < 400 else 0.0
        lines.append(window(t, "us-east", 0.0, p99_ms=1500, ttft_over_slo=ttft, ttft_p99_ms=900 if ttft else 200))
        lines.append(window(t, "eu-west", 0.0, p99_ms=1500, err=err, ttft_over_slo=0.0, ttft_p99_ms=200))
        lines.append(window(t, "ap-southeast", 0.0, p99_ms=1500, ttft_over_slo=0.0, ttft_p99_ms=200))
    write(
        "ttft_and_errors_on_the_same_evidence",
        "us-east 10 % of TTFTs over their SLO for 1 min: trips on ttft, recovers on evidence; eu-west 10 % errors "
        "from 300 s: trips on errors",
        lines,
        slo="total_p99: 3s, ttft_p99: 500ms, error_rate: 1%",
    )
    # 8. a global problem whose onset is uneven: us-east at 5 % reaches its threshold first, but the others (1.8 %)
    # already show evidence: the trip waits (rule global), the episode follows, no weight moves; then healthy
    lines = []
    for t in range(0, 600, 10):
        for r in REGIONS:
            over = (0.05 if r == "us-east" else 0.018) if t < 300 else 0.0
            lines.append(window(t, r, over, p99_ms=3300 if over else 1500))
    write(
        "uneven_global_onset_moves_nothing",
        "us-east at 5 % over, the others at 1.8 %, all from 0 s to 300 s: the first to reach its threshold waits "
        "for the others (a global problem suspected), the global episode follows, no weight ever moves",
        lines,
    )
    # 9. no flapping: us-east breaches twice, 5 minutes apart; the re-trip within recover.flap_window (10 min) of the
    # first restore holds it drained until the window has passed, although its evidence is healthy long before
    lines = []
    for t in range(0, 1500, 10):
        over = 0.10 if t < 40 or 300 <= t < 340 else 0.0
        lines.append(window(t, "us-east", over, p99_ms=3600 if over else 1500))
        lines += [window(t, r, 0.0, p99_ms=1500) for r in REGIONS[1:]]
    write(
        "flapping_region_waits_out_the_flap_window",
        "us-east at 10 % over twice, 5 min apart: one drain–restore cycle, then drained until 10 min after the first "
        "restore (recover.flap_window), then restored",
        lines,
        recover=", flap_window: 10m",
    )


def fail_open_scenarios() -> None:
    """Fail open over time at probe level: every region at 2–3 % over (a global or probe problem) moves nothing."""
    rng = random.Random(11)
    # 10. 5 min healthy, then every region between 2 % and 3 % over for 30 min: the first region to reach its
    # threshold waits while the others, pooled over its span of evidence, are not clearly healthy; the global
    # episode follows and holds for the rest; no weight moves at any time
    healthy = samples(rng, 300, {}, every_s=1.0)
    over = {"us-east": 0.02, "eu-west": 0.03, "ap-southeast": 0.025}
    breach = samples(rng, 1800, over, every_s=1.0)
    shifted = [json.dumps(d | {"t": round(d["t"] + 300.0, 3)}) for d in map(json.loads, breach)]
    write(
        "every_region_two_to_three_percent_moves_nothing",
        "every region at 0.5 % for 5 min, then us-east 2 %, eu-west 3 %, ap-southeast 2.5 % over for 30 min (probe "
        "level): a global problem, no weight ever moves",
        healthy + shifted,
        "samples",
        "1s",
    )


if __name__ == "__main__":
    main()
