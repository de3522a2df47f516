"""The log budget: an idle controller and an idle agent each write ≤ 60 INFO lines an hour, measured.

The controller runs real evaluations (real Redis, moto) with its report's clock advanced by the production
`evaluate_every` (10 s) per evaluation; the agent probes a real aiohttp worker every 20 ms and its INFO lines per
round are scaled to the production 500 ms interval. Changes are events; "nothing moved" is DEBUG.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from ctlkit import bootstrapped, feed
from probekit import FakeSink, ScriptedWorker, make_policy, wait_until
from structlog.testing import capture_logs
from structlog.typing import EventDict

from trafficd.control.controller import Controller
from trafficd.probe.agent import run_agent
from trafficd.runtime.agent_report import AgentReport
from trafficd.runtime.reload import PolicyHolder

BUDGET_PER_HOUR = 60
PRODUCTION_EVALUATE_EVERY_S = 10.0
PRODUCTION_PROBE_INTERVAL_S = 0.5
LOUD = {"info", "warning", "error", "critical"}


def loud(logs: list[EventDict]) -> list[EventDict]:
    return [e for e in logs if e.get("log_level") in LOUD]


@pytest.fixture
def loaded(redis_url: str, key_prefix: str, hosted_zone: dict[str, str], moto: Any, tmp_path: Path) -> Any:
    return bootstrapped(tmp_path, redis_url, key_prefix, hosted_zone, moto.url)


async def test_idle_controller_writes_at_most_60_info_lines_an_hour(loaded: Any) -> None:
    """120 steady-state evaluations (20 production minutes): only periodic summaries at INFO, ≤ 60 lines/hour."""
    path, lp = loaded
    ctl = Controller(PolicyHolder(path, lp))
    fake_now = [0.0]
    ctl.report.clock = lambda: fake_now[0]
    healthy = {"us-east": 200.0, "eu-west": 200.0, "ap-southeast": 200.0}
    await feed(lp.policy, healthy)
    for _ in range(5):  # warm-up: lease, state, first summary
        await ctl.evaluate_once()
        fake_now[0] += PRODUCTION_EVALUATE_EVERY_S
    evaluations = 120
    with capture_logs() as logs:
        for i in range(evaluations):
            if i % 10 == 0:
                await feed(lp.policy, healthy)
            await ctl.evaluate_once()
            fake_now[0] += PRODUCTION_EVALUATE_EVERY_S
    await ctl.shutdown()
    judged = [e for e in logs if e["event"] == "controller.region_judged"]
    assert len(judged) == 3 * evaluations and all(e["log_level"] == "debug" for e in judged)
    lines = loud(logs)
    assert {e["event"] for e in lines} <= {"controller.summary"}, [e["event"] for e in lines]
    per_hour = len(lines) * 3600.0 / (evaluations * PRODUCTION_EVALUATE_EVERY_S)
    assert per_hour <= BUDGET_PER_HOUR, per_hour


async def test_a_change_is_an_info_event_with_its_evaluation_id(loaded: Any) -> None:
    """A shift is logged at INFO with the evaluation id that the summary and the Route 53 audit entry also name."""
    path, lp = loaded
    ctl = Controller(PolicyHolder(path, lp))
    await feed(lp.policy, {"us-east": 200.0, "eu-west": 5000.0, "ap-southeast": 200.0})
    await ctl.evaluate_once()  # takes the lease and the writer epoch: sends no weight at start
    with capture_logs() as logs:
        await ctl.evaluate_once()
    await ctl.shutdown()
    (shift,) = [e for e in logs if e["event"] == "controller.weights_shifted"]
    assert shift["log_level"] == "info" and shift["evaluation_id"] == f"{shift['lease_token']}-1"
    (evaluated,) = [e for e in logs if e["event"] == "controller.evaluated"]
    assert evaluated["log_level"] == "debug" and evaluated["evaluation_id"] == shift["evaluation_id"]
    (applied,) = [e for e in logs if e["event"] == "route53.changes_applied"]  # joined by id, not by timestamps
    assert applied["evaluation_id"] == shift["evaluation_id"] and applied["policy_hash"] == shift["policy_hash"]
    assert applied["cause"] == "plan" and "eu-west" in applied["regions"]


def test_agent_summary_comes_every_five_minutes() -> None:
    """An hour of 500 ms rounds (7,200) yields 12 summaries (at 0 s, then every 300 s) and nothing else."""
    logged: list[str] = []

    class Log:
        def info(self, event: str, **_: Any) -> None:
            logged.append(event)

    clock = [0.0]
    report = AgentReport(Log(), "r1", clock=lambda: clock[0])
    for _ in range(7200):
        report.round_completed({"ok": 2}, 2, 12.0, "h")
        clock[0] += PRODUCTION_PROBE_INTERVAL_S
    assert logged == ["agent.summary"] * 12


@pytest.fixture
async def worker() -> AsyncIterator[ScriptedWorker]:
    w = await ScriptedWorker().start()
    yield w
    await w.stop()


async def test_idle_agent_writes_no_info_line_per_round(worker: ScriptedWorker) -> None:
    """A steady agent's rounds are DEBUG: beyond the start and the first summary, 100 rounds add no INFO line, so
    an hour is 12 summaries (every 300 s) ≤ 60 lines."""
    policy = make_policy([{"name": "w1", "url": f"{worker.url}/ok"}], probe={"interval": "20ms"})
    sink, stop = FakeSink(), asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(run_agent(policy, "r1", stop=stop, agent_id="a", sink=sink, rng=random.Random(1)))
        await wait_until(lambda: sum(e["event"] == "agent.round_completed" for e in logs) >= 5, what="warm-up")
        start = len(logs)
        await wait_until(
            lambda: sum(e["event"] == "agent.round_completed" for e in logs[start:]) >= 100, what="100 rounds"
        )
        steady = logs[start:]
        stop.set()
        await asyncio.wait_for(task, 10)
    rounds = [e for e in steady if e["event"] == "agent.round_completed"]
    assert all(e["log_level"] == "debug" for e in rounds)
    per_round = len(loud(steady)) / len(rounds)
    summaries_per_hour = 3600.0 / 300.0
    per_hour = per_round * 3600.0 / PRODUCTION_PROBE_INTERVAL_S + summaries_per_hour
    assert per_hour <= BUDGET_PER_HOUR, [e["event"] for e in loud(steady)]


async def test_idle_standby_controller_writes_only_its_summaries(loaded: Any) -> None:
    """A standby controller (another one holds the lease) writes only `controller.summary` at INFO: ≤ 60 lines/hour."""
    path, lp = loaded
    leader = Controller(PolicyHolder(path, lp), controller_id="ctl-a")
    standby = Controller(PolicyHolder(path, lp), controller_id="ctl-b")
    fake_now = [0.0]
    standby.report.clock = lambda: fake_now[0]
    await leader.evaluate_once()
    evaluations = 60
    try:
        with capture_logs() as logs:
            for _ in range(evaluations):
                await standby.evaluate_once()
                fake_now[0] += PRODUCTION_EVALUATE_EVERY_S
    finally:
        await standby.shutdown()
        await leader.shutdown()
    lines = loud(logs)
    assert {e["event"] for e in lines} == {"controller.summary"} and lines[0]["role"] == "standby"
    per_hour = len(lines) * 3600.0 / (evaluations * PRODUCTION_EVALUATE_EVERY_S)
    assert per_hour <= BUDGET_PER_HOUR, per_hour


def test_a_step_re_decided_while_route53_holds_it_is_logged_once() -> None:
    """The same change decided again (plan held, or a dry-run watcher) is INFO once, then DEBUG with repeated."""
    from types import SimpleNamespace as NS

    from trafficd.runtime.report import ControllerReport

    logged: list[tuple[str, str, bool]] = []

    class Log:
        def info(self, event: str, **kw: Any) -> None:
            logged.append(("info", event, bool(kw.get("repeated"))))

        def debug(self, event: str, **kw: Any) -> None:
            logged.append(("debug", event, bool(kw.get("repeated"))))

    fields = {"region": "eu-west", "state_after": "draining", "reasons": ["p99 over the SLO"]}
    decision = NS(
        region="eu-west",
        evidence=None,
        state_before="breaching",
        state_after="draining",
        fraction_before=1.0,
        fraction_after=0.75,
        to_log=lambda: dict(fields),
    )
    evaluation = NS(decisions=(decision,), guard_events=(), fail_open=False, state=NS(evaluated_at=1.76e9))
    slo = NS(total_p99=3.0, ttft_p99=None, error_rate=0.01)
    loaded = NS(hash="h", policy=NS(region_names=["eu-west"], slo=slo))
    active = NS(by_region={}, freeze=None)
    report = ControllerReport(Log())
    for i in range(3):
        report.decisions(loaded, evaluation, active, dry_run=False, lease_token=1, evaluation_id=f"1-{i}")
    assert logged == [
        ("info", "controller.weights_shifted", False),
        ("debug", "controller.weights_shifted", True),
        ("debug", "controller.weights_shifted", True),
    ]
    assert len(report.pending) == 1  # audited once


def test_a_dry_run_watcher_logs_the_same_planned_change_once() -> None:
    """A dry-run watcher's unchanged plan is INFO once; a different plan, or the plan again after none, logs anew."""
    from trafficd.runtime.report import ControllerReport

    logged: list[str] = []

    class Log:
        def info(self, event: str, **kw: Any) -> None:
            logged.append(f"{event}:{kw['evaluation_id']}")

    report = ControllerReport(Log())
    a = [{"name": "api.example.com", "set": "eu-west", "weight": 128}]
    b = [{"name": "api.example.com", "set": "eu-west", "weight": 64}]
    for i, changes in enumerate([a, a, a, b, b, [], a]):
        report.would_change(f"dry-{i}", changes)
    assert logged == ["controller.would_change:dry-0", "controller.would_change:dry-3", "controller.would_change:dry-6"]
