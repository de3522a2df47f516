"""Where a new leader starts (pure): the state Route 53 implies, and a stored state aligned with Route 53."""

from __future__ import annotations

from judgekit import make_policy

from trafficd.control.start import align_with_dns, fractions_from_dns, state_from_dns
from trafficd.decide.state import ControllerState, Phase, RegionState
from trafficd.model import RegionStateName, identity_matrix

NAMES = ["us-east", "eu-west", "ap-southeast"]


def _drained_eu() -> dict[str, dict[str, float]]:
    m = identity_matrix(NAMES)
    m["eu-west"] = {"us-east": 0.6, "eu-west": 0.0, "ap-southeast": 0.4}
    return m


def test_no_stored_state_starts_from_what_route53_holds() -> None:
    """A drained region in Route 53 starts drained and tripped (phase down, hold-down), with Route 53's matrix."""
    p = make_policy()
    state = state_from_dns(p, _drained_eu(), now=100.0)
    eu = state.regions["eu-west"]
    assert eu.serving_fraction == 0.0 and eu.phase == Phase.DOWN and eu.name == RegionStateName.DRAINED
    assert eu.hold_down_until is not None and eu.hold_down_until > 100.0
    assert state.regions["us-east"].serving_fraction == 1.0 and state.regions["us-east"].phase == Phase.NORMAL
    assert state.matrix == _drained_eu()


def test_a_missing_pool_counts_as_serving_fully() -> None:
    """Rows absent from Route 53 (pool missing or all zero) start as the identity row: nothing implied."""
    p = make_policy()
    assert fractions_from_dns(p, {}) == {r: 1.0 for r in NAMES}
    assert state_from_dns(p, {}, now=1.0).matrix == identity_matrix(NAMES)


def test_stored_state_that_route53_disagrees_with_is_aligned() -> None:
    """A stored state one step behind Route 53 (a batch whose outcome was never seen) takes Route 53's pool."""
    p = make_policy()
    half = identity_matrix(NAMES)
    half["eu-west"] = {"us-east": 0.5, "eu-west": 0.5, "ap-southeast": 0.0}
    stored = ControllerState(
        regions={r: RegionState() for r in NAMES}
        | {"eu-west": RegionState(RegionStateName.DRAINING, 0.5, Phase.DOWN, hold_down_until=50.0)},
        matrix=half,
    )
    aligned, changed = align_with_dns(p, stored, _drained_eu(), now=100.0)
    assert changed == ["eu-west"]
    assert aligned.regions["eu-west"].serving_fraction == 0.0 and aligned.regions["eu-west"].phase == Phase.DOWN
    assert aligned.regions["eu-west"].hold_down_until == 50.0  # the stored timers are kept
    assert aligned.matrix["eu-west"] == _drained_eu()["eu-west"]


def test_weight_rounding_is_not_a_disagreement() -> None:
    """Shares that differ from the stored matrix only by the 0–255 weight rounding keep the stored state."""
    p = make_policy()
    stored = state_from_dns(p, identity_matrix(NAMES), now=1.0)
    rounded = identity_matrix(NAMES)
    rounded["us-east"] = {"us-east": 254.6 / 255, "eu-west": 0.4 / 255, "ap-southeast": 0.0}
    aligned, changed = align_with_dns(p, stored, rounded, now=2.0)
    assert changed == [] and aligned == stored
