"""control/blind.py: which agents a blind region's warning names."""

from __future__ import annotations

from trafficd.control.blind import silent_agents


def test_an_agent_silent_for_half_the_stale_window_is_named_and_a_live_one_is_not() -> None:
    """A killed agent (last heartbeat 3 s ago, stale window 5 s) is named even before its own heartbeat passes the
    whole window; an agent that heartbeat 0.3 s ago (between rounds) is not."""
    beats = {"agent-killed": 97.0, "agent-alive": 99.7}
    assert silent_agents(beats, now=100.0, stale_after_s=5.0) == ["agent-killed"]
