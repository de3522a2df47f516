"""`trafficd policy check|show|diff|schema` and the behaviour diff behind `diff` and the reload log."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import pytest
import structlog
import yaml

from trafficd import cli
from trafficd.policy.diff import diff_policies
from trafficd.policy.schema import parse_policy

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "policies" / "example.yaml"
MINIMAL = ROOT / "policies" / "minimal.yaml"
INVALID = Path(__file__).parent / "policies"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """cli.main configures structlog to print to this test's captured stdout; put the old config back after."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["policy", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_check_valid_files(capsys: pytest.CaptureFixture[str]) -> None:
    """`policy check` exits 0 for valid files and names each with its hash and regions."""
    code, out, err = run(capsys, "check", str(EXAMPLE), str(MINIMAL))
    assert code == 0 and err == ""
    hash_ = parse_policy(EXAMPLE.read_text()).hash
    assert [x for x in out.splitlines() if not x.startswith("  region ")] == [
        f"{EXAMPLE}: ok (policy hash {hash_}; regions us-east, eu-west, ap-southeast)",
        f"{MINIMAL}: ok (policy hash {parse_policy(MINIMAL.read_text()).hash}; regions us-east, eu-west)",
    ]


def test_check_reports_every_problem_of_every_file_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """One invalid file among valid ones: exit 1, its problems on stderr, the others still checked."""
    bad = INVALID / "invalid-windows-out-of-order.yaml"
    code, out, err = run(capsys, "check", str(bad), str(MINIMAL))
    assert code == 1
    assert out.splitlines()[0] == f"{bad}: INVALID"
    assert out.splitlines()[1].startswith(f"{MINIMAL}: ok")
    assert err.splitlines() == [
        f"{bad}:22:9: windows.trip: (5s) must be at least windows.slice (10s)",
        f"{bad}:23:9: windows.long: (3s) must be at least windows.trip (5s)",
    ]


def test_check_warnings_pass_unless_asked(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Warnings are printed and pass; with --warnings-as-errors they fail the check."""
    path = tmp_path / "p.yaml"
    path.write_text(MINIMAL.read_text() + "ramp:\n  cooldown: 30s\n")
    code, _, err = run(capsys, "check", str(path))
    assert code == 0
    assert err.startswith(f"warning: {path}:22:13: ramp.cooldown: (30s) is shorter than dns.ttl (60s)")
    code, out, _ = run(capsys, "check", "--warnings-as-errors", str(path))
    assert code == 1 and out == f"{path}: INVALID (warnings are errors)\n"


def test_check_through_the_console_script() -> None:
    """The installed `trafficd policy check` exits 1 on a bad file and prints the pinned message on stderr."""
    bad = INVALID / "invalid-misspelt-key.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "trafficd", "policy", "check", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr == f"{bad}:21:3: windows.min_sample: unknown key 'min_sample'; did you mean 'min_samples'?\n"


def test_show_prints_the_effective_policy_that_loads_back_the_same(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`policy show` fills in every default, writes durations as '3s', and its output has the same hash."""
    code, out, _ = run(capsys, "show", str(MINIMAL))
    assert code == 0
    data = yaml.safe_load(out)
    assert data["windows"]["min_samples"] == 400
    assert data["slo"]["total_p99"] == "3s" and data["recover"]["below"] == "80%"
    assert data["probe"]["deadlines"] == {"connect": "3s", "first_token": "10s", "gap": "10s", "total": "30s"}
    shown = tmp_path / "shown.yaml"
    shown.write_text(out)
    assert parse_policy(shown.read_text()).hash == parse_policy(MINIMAL.read_text()).hash
    assert f"# policy hash {parse_policy(MINIMAL.read_text()).hash}" in out


def test_show_json_and_invalid(capsys: pytest.CaptureFixture[str]) -> None:
    """`policy show --json` prints JSON; an invalid file exits 1 with its problems on stderr."""
    code, out, _ = run(capsys, "show", "--json", str(EXAMPLE))
    assert code == 0 and json.loads(out)["slo"]["ttft_p99"] == "300ms"
    code, out, err = run(capsys, "show", str(INVALID / "invalid-empty.yaml"))
    assert code == 1 and out == "" and "nothing but comments" in err


def test_diff_shows_behaviour_changes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`policy diff` lists what changes in behaviour, one line each, and exits 1 when something does."""
    new = tmp_path / "new.yaml"
    new.write_text(
        MINIMAL.read_text()
        .replace("      - name: euw1-a\n", "      - name: euw1-b\n")
        .replace("dns:\n  zone_id", "slo:\n  total_p99: 2500ms\ndns:\n  zone_id")
    )
    code, out, _ = run(capsys, "diff", str(MINIMAL), str(new))
    assert code == 1
    old_hash, new_hash = parse_policy(MINIMAL.read_text()).hash, parse_policy(new.read_text()).hash
    assert out.splitlines() == [
        f"policy hash {old_hash} → {new_hash}",
        "regions.eu-west.workers: removed euw1-a",
        'regions.eu-west.workers: added euw1-b {"url": "https://inference.eu-west.example.com"}',
        "slo.total_p99: 3s → 2.5s",
        "recovery threshold (recover.below × slo.total_p99): 2.4s → 2s",
    ]


def test_diff_ignores_comments_and_spelt_out_defaults(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Comments and defaults written out change nothing: exit 0; an invalid side exits 2."""
    same = tmp_path / "same.yaml"
    same.write_text("# reviewed by on-call\n" + MINIMAL.read_text() + "windows:\n  trip: 5m  # default\n")
    code, out, _ = run(capsys, "diff", str(MINIMAL), str(same))
    assert code == 0 and out == f"no change in behaviour (policy hash {parse_policy(MINIMAL.read_text()).hash})\n"
    code, _, err = run(capsys, "diff", str(MINIMAL), str(INVALID / "invalid-tab-indent.yaml"))
    assert code == 2 and "a tab character" in err


def test_diff_regions_models_and_effective_deadlines() -> None:
    """Region added/removed, neighbour order, a policy model added, and the deadlines each region really uses."""
    old = parse_policy(EXAMPLE.read_text()).policy
    text = (
        EXAMPLE.read_text()
        .replace("    neighbours: [eu-west, ap-southeast]    #", "    neighbours: [ap-southeast, eu-west]    #")
        .replace("  - name: llama-3.1-70b-instruct\n", "  - name: llama-3.1-405b\n  - name: llama-3.1-70b-instruct\n")
        .replace("      connect: 5s                          # far", "      connect: 4s                          # far")
    )
    new = parse_policy(text).policy
    assert diff_policies(old, new) == [
        "models: added llama-3.1-405b",
        "regions.us-east.neighbours: [eu-west, ap-southeast] → [ap-southeast, eu-west]",
        "regions.ap-southeast.deadlines.connect: 5s → 4s",
        "models probed in us-east: llama-3.1-8b-instruct, llama-3.1-70b-instruct → llama-3.1-8b-instruct, "
        "llama-3.1-405b, llama-3.1-70b-instruct",
        "models probed in eu-west: llama-3.1-8b-instruct, llama-3.1-70b-instruct → llama-3.1-8b-instruct, "
        "llama-3.1-405b, llama-3.1-70b-instruct",
        "deadlines for ap-southeast × llama-3.1-8b-instruct: connect=5s first_token=10s gap=10s total=30s → "
        "connect=4s first_token=10s gap=10s total=30s",
    ]
    reordered = parse_policy(
        EXAMPLE.read_text()
        .replace(
            "  - name: llama-3.1-8b-instruct\n  - name: llama-3.1-70b-instruct\n    deadlines:\n",
            "  - name: llama-3.1-70b-instruct\n    deadlines:\n",
        )
        .replace(
            "  # A reasoning model would read:\n",
            "  - name: llama-3.1-8b-instruct\n  # A reasoning model would read:\n",
        )
    ).policy
    assert diff_policies(old, reordered) == [
        "models: order [llama-3.1-8b-instruct, llama-3.1-70b-instruct] → "
        "[llama-3.1-70b-instruct, llama-3.1-8b-instruct]",
        "models probed in us-east: llama-3.1-8b-instruct, llama-3.1-70b-instruct → llama-3.1-70b-instruct, "
        "llama-3.1-8b-instruct",
        "models probed in eu-west: llama-3.1-8b-instruct, llama-3.1-70b-instruct → llama-3.1-70b-instruct, "
        "llama-3.1-8b-instruct",
    ]
    removed = parse_policy(
        MINIMAL.read_text().replace(
            "  eu-west:\n    workers:\n      - name: euw1-a\n        url: https://inference.eu-west.example.com\n"
            "    dns: {endpoint: eu-west.lb.example.com, aws_region: eu-west-1}\n",
            "",
        )
    ).policy
    minimal = parse_policy(MINIMAL.read_text()).policy
    assert diff_policies(minimal, removed) == ["regions: removed region eu-west"]
    assert diff_policies(removed, minimal) == ["regions: added region eu-west"]


def test_schema_accepts_the_examples_and_refuses_unknown_keys(capsys: pytest.CaptureFixture[str]) -> None:
    """`policy schema` is a valid JSON Schema (2020-12) that accepts both examples and refuses a misspelt key."""
    code, out, _ = run(capsys, "schema")
    assert code == 0
    schema = json.loads(out)
    validator = jsonschema.Draft202012Validator(schema)
    validator.check_schema(schema)
    for path in (EXAMPLE, MINIMAL):
        validator.validate(yaml.safe_load(path.read_text()))
    assert not validator.is_valid(yaml.safe_load((INVALID / "invalid-misspelt-key.yaml").read_text()))
    assert schema["$defs"]["Windows"]["properties"]["trip"]["default"] == "5m"
    assert schema["$defs"]["Slo"]["properties"]["error_rate"]["default"] == "1%"
