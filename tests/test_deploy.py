"""Shipped alert rules and dashboard: promtool checks and unit-tests the rules; every query names real metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families
from test_metrics import populate

from trafficd.runtime import metrics

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "trafficd-rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "trafficd-rules.test.yml"
DASHBOARD = DEPLOY / "grafana" / "trafficd-dashboard.json"
METRIC = re.compile(r"\btrafficd_[a-z0-9_]+")
SUFFIXES = ("_bucket", "_count", "_sum")


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is needed (Debian package `prometheus`; bootstrap installs it)"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def exported() -> set[str]:
    """Every series name the agent and the controller export (histogram and counter suffixes included)."""
    populate()
    out: set[str] = set()
    for role in ("agent", "controller"):
        for family in text_string_to_metric_families(metrics.exposition(role).decode()):
            out |= {s.name for s in family.samples}
    return out


def dashboard_exprs(dash: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [a["expr"] for a in dash["annotations"]["list"]]
    return exprs


def test_rules_pass_promtool_check_and_their_unit_tests() -> None:
    """`promtool check rules` accepts the rules file and `promtool test rules` passes every alert's test."""
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_the_issue_asks_for_is_there_and_tested() -> None:
    """No leader, loop, unknown, draining, Route 53 failing/pending, reload failed, samples dropped, an agent falling
    behind: each has a test."""
    rules = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert alerts == {
        "TrafficdNoLeader",
        "TrafficdLoopNotCompleting",
        "TrafficdRegionUnknown",
        "TrafficdRegionDraining",
        "TrafficdRoute53ChangeFailing",
        "TrafficdRoute53ChangePending",
        "TrafficdPolicyReloadFailed",
        "TrafficdSamplesDropped",
        "TrafficdAgentFallingBehind",
    }
    tests = yaml.safe_load(RULE_TESTS.read_text())
    fired = {t["alertname"] for case in tests["tests"] for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert fired == alerts


def test_rules_and_dashboard_name_only_exported_metrics() -> None:
    """Every metric named by an alert, a panel or an annotation is one trafficd exports."""
    names = exported()
    rules = yaml.safe_load(RULES.read_text())
    exprs = [str(r["expr"]) for g in rules["groups"] for r in g["rules"]]
    exprs += dashboard_exprs(json.loads(DASHBOARD.read_text()))
    used = {m for e in exprs for m in METRIC.findall(e)}
    missing = sorted(m for m in used if m not in names and not any(m + s in names for s in SUFFIXES))
    assert not missing


def test_dashboard_loads_and_its_queries_parse(tmp_path: Path) -> None:
    """The dashboard is Grafana JSON with unique panel ids and refIds; each query is valid PromQL (promtool)."""
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "trafficd" and dash["schemaVersion"] >= 36
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and all({"h", "w", "x", "y"} <= set(p["gridPos"]) for p in dash["panels"])
    for p in dash["panels"]:
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for wanted in ("serving ratio", "p99", "error ratio", "samples", "route 53"):
        assert wanted in titles
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query{i}", "expr": e.replace("$region", ".*")}
                    for i, e in enumerate(dashboard_exprs(dash))
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
