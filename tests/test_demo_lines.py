"""The demo's readable progress lines for Route 53 events."""

from __future__ import annotations

from trafficd.dev.demo import _describe


def test_a_takeover_batch_names_the_epoch_record_instead_of_an_empty_list() -> None:
    """A batch with no weight (the new leader's writer-epoch TXT record) still says what it wrote."""
    txt = {"name": "_trafficd-writer.example.com.", "type": "TXT", "set_identifier": None, "values": ['"epoch=2"']}
    line = _describe({"event": "route53.changes_applied", "change_id": "C1", "changes": [{"after": txt}]})
    assert line == 'route53.changes_applied change_id=C1: TXT _trafficd-writer.example.com. → "epoch=2"'


def test_a_weight_batch_shows_each_set_before_and_after() -> None:
    """Weight changes read as set_identifier before→after."""
    change = {"before": {"weight": 255}, "after": {"set_identifier": "eu-west", "weight": 168, "type": "A"}}
    line = _describe({"event": "route53.changes_applied", "change_id": "C2", "changes": [change]})
    assert line == "route53.changes_applied change_id=C2: eu-west 255→168"


def test_a_shift_shows_the_over_slo_share_before_the_p99_of_finished_probes() -> None:
    """A weight shift reads as the over-SLO share of n (what tripped it), then the trailing p99 of finished probes."""
    ev = {
        "event": "controller.weights_shifted",
        "region": "eu-west",
        "state_before": "healthy",
        "state_after": "draining",
        "serving_fraction_before": 1.0,
        "serving_fraction_after": 0.66,
        "over_slo_fraction": 0.375,
        "n": 16,
        "p99_ms": 311.0,
        "error_rate": 0.0,
        "decided_by": "trip",
        "weights_after": {"us-east": 0.34, "eu-west": 0.66},
    }
    assert _describe(ev) == (
        "controller.weights_shifted region=eu-west healthy→draining serving 1.00→0.66 (over the SLO 38 % of n=16, "
        "p99 of the finished 311 ms, errors 0.000, by trip) its users → us-east 0.34, eu-west 0.66"
    )
