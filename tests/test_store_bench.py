"""The stats benchmark runs end to end (quick mode) and reports every figure the issue asks for."""

from __future__ import annotations

import re

import pytest

from trafficd.dev.bench import stats


async def test_quick_benchmark_prints_every_figure_with_zero_decision_disagreements(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`python -m trafficd.dev.bench.stats --quick` prints ingest, Redis CPU, evaluation, error and decision figures."""
    await stats.run(quick=True)
    out = capsys.readouterr().out
    for heading in ("## p99 error", "## Ingest", "## Redis memory", "## Evaluation time", "## SLO decisions through"):
        assert heading in out
    ratios = [float(x) for x in re.findall(r"memory at 100/s is ([\d.]+)× that at 1/s", out)]
    assert len(ratios) == 2 and max(ratios) <= 5.0
    assert re.search(r"samples/s; Redis CPU [\d.]+ µs/sample", out)
    assert re.findall(r"decision disagreements: exact count (\d+)", out) == ["0", "0"]
    assert "decision disagreements 0" in out
    errors = [float(x) for x in re.findall(r"p99 relative error mean [\d.]+% max ([\d.]+)%", out)]
    assert errors and max(errors) <= 1.0
