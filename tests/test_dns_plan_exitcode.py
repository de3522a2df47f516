"""`trafficd dns plan --detailed-exitcode`: 0 when nothing would change, 2 when changes are pending (terraform's
convention), against moto; without the flag a pending plan still exits 0."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ctlkit import policy_text

from trafficd import cli
from trafficd.dns.route53 import client as r53client
from trafficd.dns.route53 import provider as route53
from trafficd.policy.schema import load_policy


def test_detailed_exitcode_is_2_when_changes_are_pending(
    redis_url: str,
    key_prefix: str,
    hosted_zone: dict[str, str],
    moto: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No change → 0; a matrix that drains eu-west by half → 2 with the batch printed; plain `plan` → 0."""
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text(redis_url, key_prefix, hosted_zone, moto.url))
    policy = load_policy(path).policy
    route53.bootstrap(policy, r53client.route53_client(policy))
    plan = ["dns", "plan", "--policy", str(path)]
    capsys.readouterr()
    assert cli.main([*plan, "--from", "current", "--detailed-exitcode"]) == 0
    assert capsys.readouterr().out.strip() == "no changes"
    matrix = {r: {r: 1.0} for r in policy.region_names}
    matrix["eu-west"] = {"eu-west": 0.5, "us-east": 0.5}
    mfile = tmp_path / "matrix.json"
    mfile.write_text(json.dumps(matrix))
    assert cli.main([*plan, "--matrix-file", str(mfile), "--detailed-exitcode"]) == 2
    assert capsys.readouterr().out.count("REPLACE") == 2
    assert cli.main([*plan, "--matrix-file", str(mfile)]) == 0
