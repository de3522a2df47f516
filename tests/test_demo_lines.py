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
