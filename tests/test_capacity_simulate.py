"""`trafficd simulate` takes load and headroom columns: window lines and probe-level capacity readings."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import kit
import pytest
from judgekit import BASE

from trafficd import cli


def _policy(tmp_path: Path, **regions: Any) -> Path:
    doc = kit.merge(
        copy.deepcopy(BASE),
        {"capacity": {"max_concurrency": 64, "scrape_every": "1s", "max_age": "5s"}, "regions": regions},
    )
    return kit.write_policy(tmp_path / "policy.yaml", doc)


def _simulate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, Any]], str]:
    capsys.readouterr()
    code = cli.main(["simulate", *args])
    out = capsys.readouterr()
    return code, [json.loads(line) for line in out.out.splitlines()], out.err


def _write(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def window(t: int, region: str, over: float, load: float, room: float, **kw: Any) -> dict[str, Any]:
    return {"t": t, "region": region, "n": 1000, "p99_ms": 4000 if over else 1500, "over_slo": over,
            "error_rate": 0.0, "load_rps": load, "headroom_rps": room, **kw}  # fmt: skip


def test_timeline_spills_by_volume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A slow us-east (100 req/s) sheds only eu-west's 10 req/s of headroom: it keeps 90 % of its users."""
    policy = _policy(tmp_path)
    timeline = _write(
        tmp_path / "t.jsonl",
        [window(1, "us-east", 0.2, 100, 60), window(1, "eu-west", 0.0, 20, 10), window(1, "ap-southeast", 0, 20, 0)],
    )
    code, rows, _ = _simulate(capsys, "--policy", str(policy), "--timeline", str(timeline))
    assert code == 0
    us = next(r for r in rows if r["region"] == "us-east")
    assert us["serving_fraction"] == pytest.approx(0.9) and "capacity" in us["guards"]
    assert us["weights"] == pytest.approx({"us-east": 0.9, "eu-west": 0.1, "ap-southeast": 0.0})
    assert us["capacity"] == {"source": "live", "load_rps": 100.0, "headroom_rps": 60.0, "age_s": 0.0,
                              "kv_usage": None}  # fmt: skip


def test_timeline_stale_capacity_uses_the_declared_headroom(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """eu-west's figures stale: it takes its declared 30 % of the least busy known load (20 req/s) = 6 req/s."""
    policy = _policy(tmp_path, **{"eu-west": {"capacity_headroom": "30%"}})
    timeline = _write(
        tmp_path / "t.jsonl",
        [
            window(1, "us-east", 0.2, 100, 60),
            {"t": 1, "region": "eu-west", "n": 1000, "p99_ms": 1500, "over_slo": 0.0, "capacity": "stale"},
            window(1, "ap-southeast", 0, 20, 0),
        ],
    )
    code, rows, _ = _simulate(capsys, "--policy", str(policy), "--timeline", str(timeline))
    us = next(r for r in rows if r["region"] == "us-east")
    assert code == 0 and us["weights"]["eu-west"] == pytest.approx(0.06)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"capacity": "fresh"}, 'capacity: must be live, stale or missing (got "fresh")'),
        ({"load_rps": None, "capacity": "live"}, "load_rps: missing; live capacity needs the region's load"),
        ({"headroom_rps": -1}, "headroom_rps: -1 is out of range"),
        ({"load_rps": True}, "load_rps: expected a number, got true"),
    ],
)
def test_bad_capacity_columns_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: dict[str, Any], message: str
) -> None:
    """A bad capacity column is a file:line error and nothing is printed on stdout."""
    policy = _policy(tmp_path)
    line = {**window(1, "us-east", 0.0, 100, 60), **extra}
    if line.get("load_rps") is None:
        line.pop("load_rps")
    timeline = _write(tmp_path / "t.jsonl", [line])
    code, rows, err = _simulate(capsys, "--policy", str(policy), "--timeline", str(timeline))
    assert code == 1 and rows == [] and f"t.jsonl:1: {message}" in err


def test_probe_level_capacity_readings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Probe-level files carry capacity readings; a reading older than capacity.max_age (5 s) is stale."""
    policy = _policy(tmp_path)
    lines: list[dict[str, Any]] = []
    for r, load, room in (("us-east", 100, 60), ("eu-west", 20, 10), ("ap-southeast", 20, 0)):
        lines.append({"t": 0.0, "region": r, "load_rps": load, "headroom_rps": room})
    for i in range(300):
        t = i * 0.05
        for r in ("us-east", "eu-west", "ap-southeast"):
            ok = r != "us-east"
            lines.append({"t": t, "region": r, "worker": "w", "model": "m", "ok": ok,
                          "reason": None if ok else "total_timeout", "total_ms": 800.0 if ok else 30000.0})  # fmt: skip
    code, rows, err = _simulate(capsys, "--policy", str(policy), "--samples", str(_write(tmp_path / "s.jsonl", lines)))
    assert code == 0, err
    us = [r for r in rows if r["region"] == "us-east"]
    live = [r for r in us if r["capacity"]["source"] == "live"]
    stale = [r for r in us if r["capacity"]["source"] == "stale"]
    assert live and stale and all(r["capacity"]["age_s"] > 5 for r in stale)
    assert all(r["serving_fraction"] >= 0.9 - 1e-9 for r in live)  # only eu-west's 10 req/s may leave while live


def test_bench_decisions_takes_load_and_headroom(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`bench-decisions --load … --headroom …` prints each drained region's req/s by volume beside the unit rule."""
    import argparse

    from trafficd.dev.bench import decisions

    policy = _policy(tmp_path, **{r: {"capacity_headroom": "60%"} for r in ("us-east", "eu-west", "ap-southeast")})
    args = decisions._parser(argparse.ArgumentParser()).parse_args(
        [
            "--policy",
            str(policy),
            "--json",
            "--load",
            "us-east=100,eu-west=20,ap-southeast=20",
            "--headroom",
            "us-east=60,eu-west=10,ap-southeast=5",
        ]
    )
    capsys.readouterr()
    assert decisions._command(args) == 0
    rows = {r["drained"]: r for r in json.loads(capsys.readouterr().out)["spill"]}
    assert rows["us-east"]["by_volume_rps"] == {"us-east": 85.0, "eu-west": 10.0, "ap-southeast": 5.0}
    assert rows["us-east"]["by_units_rps"] == {"eu-west": 60.0, "ap-southeast": 40.0}
    assert rows["eu-west"]["by_volume_rps"] == {"us-east": 20.0}
