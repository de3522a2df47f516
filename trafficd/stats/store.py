"""Redis adapter of the statistics: `redis_client`, `SampleSink` (agents write), `StatsView` (controller reads).

Layout and reasoning in docs/stats.md; key names in keys.py; the histogram in sketch.py; the incremental window
bookkeeping in window.py. The code lives in store_client.py, store_sink.py and store_view.py; this module is the
one name the rest of trafficd imports. Redis errors never reach the callers: the sink buffers and retries with
capped jittered backoff; the view reports every region `unreadable` (the judge holds).
"""

from __future__ import annotations

from trafficd.stats.client import TRANSIENT, Backoff, StoreConfigError, client_for, redis_client
from trafficd.stats.sink import SampleSink
from trafficd.stats.view import GroupStats, RegionDetail, StatsView

__all__ = [
    "TRANSIENT",
    "Backoff",
    "GroupStats",
    "RegionDetail",
    "SampleSink",
    "StatsView",
    "StoreConfigError",
    "client_for",
    "redis_client",
]
