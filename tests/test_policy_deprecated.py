"""Fields of the old point-estimate rule (tests/policies/deprecated-*.yaml) still load but each draws a pinned
deprecation warning naming file, line, field and what replaces it; the judge ignores them.

A message change is a change of interface: update the table on purpose. `{f}` stands for the fixture's path.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from trafficd import cli
from trafficd.decide.judge import ControllerState, evaluate
from trafficd.model import Overrides, RegionEvidence, SliceCounts
from trafficd.policy.schema import load_policy, parse_policy

FIXTURES = Path(__file__).parent / "policies"
DEP = "deprecated: ignored since the sequential trip rule (docs/judge.md); "
MIN_SAMPLES = (
    "windows.min_samples: " + DEP + "evidence accumulates probe by probe, so a window needs no minimum number of "
    "samples; remove it (`trafficd policy check` prints the detection delay the region's probe rate gives)"
)
EVALUATIONS = (
    "trip.evaluations: " + DEP + "consecutive evaluations no longer count; remove it (how fast a region trips "
    "follows from trip.healthy_rate, trip.breach_rate and trip.false_trips per trip.false_trip_days)"
)
FAST_RULE = (
    "trip.fast_rule.over: " + DEP + "a hard stall trips on its error evidence within the probe deadline + one "
    "evaluation; remove it (trip.fast_rule.of_last still sizes the recent-probe list `trafficd stats` shows)"
)
BELOW = (
    "recover.below: " + DEP + "recovery is evidence that the rate is back at trip.healthy_rate, not the p99 value; "
    "remove it"
)
RECOVER_EVALUATIONS = (
    "recover.evaluations: " + DEP + "recovery needs evidence of trip.healthy_rate as strong as a trip's, then "
    "recover.hold_down; remove it"
)

EXPECTED: dict[str, tuple[str, ...]] = {
    "deprecated-min-samples.yaml": ("{f}:21:16: " + MIN_SAMPLES,),
    "deprecated-trip-evaluations.yaml": ("{f}:21:16: " + EVALUATIONS,),
    "deprecated-fast-rule.yaml": ("{f}:21:21: " + FAST_RULE,),
    "deprecated-recover-below.yaml": ("{f}:21:10: " + BELOW,),
    "deprecated-old-rule-everything.yaml": (
        "{f}:22:16: " + MIN_SAMPLES,
        "{f}:24:16: " + EVALUATIONS,
        "{f}:26:11: " + FAST_RULE,
        "{f}:29:10: " + BELOW,
        "{f}:30:16: " + RECOVER_EVALUATIONS,
    ),
}


def _deprecations(path: Path) -> list[str]:
    return [str(w) for w in load_policy(path).warnings if DEP in str(w)]


def test_every_fixture_is_pinned() -> None:
    """Each deprecated-*.yaml has its expected warnings here and each entry has its file."""
    assert {p.name for p in FIXTURES.glob("deprecated-*.yaml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_deprecated_field_loads_with_the_pinned_warning(name: str) -> None:
    """The policy loads (a running daemon takes it) and warns exactly as pinned: file, line, column, field, fix."""
    path = FIXTURES / name
    assert _deprecations(path) == [line.replace("{f}", str(path)) for line in EXPECTED[name]]


def test_policy_check_prints_the_deprecations_and_fails_only_with_warnings_as_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`policy check` exits 0 and prints each deprecation on stderr; `--warnings-as-errors` makes it exit 1."""
    path = str(FIXTURES / "deprecated-old-rule-everything.yaml")
    assert cli.main(["policy", "check", path]) == 0
    err = capsys.readouterr().err
    assert f"warning: {path}:24:16: {EVALUATIONS}" in err and f"warning: {path}:29:10: {BELOW}" in err
    assert cli.main(["policy", "check", "--warnings-as-errors", path]) == 1


def test_the_judge_ignores_the_deprecated_fields() -> None:
    """The same evidence gives the same decisions with and without the old rule's fields."""
    old = load_policy(FIXTURES / "deprecated-old-rule-everything.yaml").policy
    text = (FIXTURES / "deprecated-old-rule-everything.yaml").read_text()
    new = parse_policy(text.split("windows:\n")[0] + "recover:\n  hold_down: 2m\n").policy
    state_old = state_new = ControllerState()
    for i in range(60):
        ev = {
            r: RegionEvidence(r, n=40, slices=(SliceCounts(i, 40, 3 if r == "us-east" and i > 5 else 0),))
            for r in ("us-east", "eu-west")
        }
        a = evaluate(old, state_old, ev, Overrides(), i * 10.0)
        b = evaluate(new, state_new, ev, Overrides(), i * 10.0)
        assert [d.to_log() for d in a.decisions] == [d.to_log() for d in b.decisions]
        state_old, state_new = a.state, b.state
    assert state_new.regions["us-east"].serving_fraction < 1.0  # the evidence did trip
