"""Every Redis key name of the statistics store, in one place.

All keys of one region carry the hash tag `{region}`, so in a Redis Cluster a region's slices, index and
heartbeats live in one slot: a writer's per-region pipeline (MULTI/EXEC) and a reader's per-region reads stay on
one node. The prefix (`policy.redis.key_prefix`) comes first so that several deployments can share a server.

    {p}:{r}:s:{slice}:{worker}|{model}   string  dense u16 BITFIELD words of one series and one slice (sketch.py)
    {p}:{r}:a:{slice}                    string  the same words as u32, summed over every series of the region
                                                 (written in the same MULTI/EXEC: the region's exact merge)
    {p}:{r}:idx:{epoch}                  hash    slice id → samples written into that slice (change detection,
                                                 clock-skew accounting); one key per EPOCH_SLICES slices
    {p}:{r}:newest                       hash    worker|model → newest sample stamp of its latest batch (unix s)
    {p}:{r}:recent                       list    last m probes of the region, newest first: "1:<stamp>" / "0:<stamp>"
    {p}:{r}:hb                           hash    agent id → last heartbeat (unix s, agent clock)
"""

from __future__ import annotations

EPOCH_SLICES = 64  # slices per index key: bounds the index's fields and lets it expire


def series_id(worker: str, model: str) -> str:
    """`worker|model`; worker names never contain '|' (policy names, DNS host names)."""
    return f"{worker}|{model}"


def split_series(series: str) -> tuple[str, str]:
    worker, _, model = series.partition("|")
    return worker, model


def _region(prefix: str, region: str) -> str:
    return f"{prefix}:{{{region}}}"


def slice_key(prefix: str, region: str, slice_id: int, series: str) -> str:
    return f"{_region(prefix, region)}:s:{slice_id}:{series}"


def region_slice_key(prefix: str, region: str, slice_id: int) -> str:
    return f"{_region(prefix, region)}:a:{slice_id}"


def epoch_of(slice_id: int) -> int:
    return slice_id // EPOCH_SLICES


def index_key(prefix: str, region: str, epoch: int) -> str:
    return f"{_region(prefix, region)}:idx:{epoch}"


def newest_key(prefix: str, region: str) -> str:
    return f"{_region(prefix, region)}:newest"


def recent_key(prefix: str, region: str) -> str:
    return f"{_region(prefix, region)}:recent"


def heartbeat_key(prefix: str, region: str) -> str:
    return f"{_region(prefix, region)}:hb"


# ---- per service (controller and on-call): hash tag {service} keeps them in one Redis Cluster slot


def _service(prefix: str, service: str) -> str:
    return f"{prefix}:{{{service}}}"


def controller_state_key(prefix: str, service: str) -> str:
    """JSON of the controller's `ControllerState` (region states, timers, last matrix)."""
    return f"{_service(prefix, service)}:controller:state"


def lease_key(prefix: str, service: str) -> str:
    """The leader lease: `holder:token`, with a PX expiry."""
    return f"{_service(prefix, service)}:controller:lease"


def lease_token_key(prefix: str, service: str) -> str:
    """Fencing-token counter, INCR on every acquisition."""
    return f"{_service(prefix, service)}:controller:lease_token"


def override_region_key(prefix: str, service: str, region: str) -> str:
    return f"{_service(prefix, service)}:override:region:{region}"


def override_freeze_key(prefix: str, service: str) -> str:
    return f"{_service(prefix, service)}:override:freeze"


def audit_key(prefix: str, service: str) -> str:
    """The audit stream (XADD, capped by MAXLEN ~ and MINID by age): decisions, guards, overrides, Route 53."""
    return f"{_service(prefix, service)}:audit"
