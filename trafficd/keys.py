"""Every Redis key name of trafficd, in one place.

Every key names its service (`policy.service`), so several services can share one Redis; the prefix
(`policy.redis.key_prefix`) comes first so that several deployments can too. Statistics keys of one region carry
the hash tag `{region}`, so in a Redis Cluster a region's slices, index and heartbeats live in one slot: a writer's
per-region pipeline (MULTI/EXEC) and a reader's per-region reads stay on one node. Each region's keys share the
prefix `{p}:{svc}:{r}:`, which is what a region's agent ACL user may write (`trafficd redis acl`, below).

    {p}:{svc}:{r}:s:{slice}:{worker}|{model}  string  dense u16 BITFIELD words of one series and one slice
    {p}:{svc}:{r}:a:{slice}                   string  the same words as u32, summed over every series of the
                                                      region (written in the same MULTI/EXEC: the exact merge)
    {p}:{svc}:{r}:idx:{epoch}                 hash    slice id → samples written into that slice (change
                                                      detection, clock-skew accounting); one key per EPOCH_SLICES
    {p}:{svc}:{r}:newest                      hash    worker|model → newest sample stamp of its latest batch
    {p}:{svc}:{r}:recent                      list    last m probes of the region, newest first: "1:<stamp>"
    {p}:{svc}:{r}:hb                          hash    agent id → last heartbeat (unix s, Redis-corrected clock)
    {p}:{svc}:{r}:b:{slice}                   hash    batch id → samples: the batches an agent wrote in that
                                                      slice, so a batch retried after a lost reply lands once
    {p}:{svc}:{r}:cap:{bucket}                hash    worker → JSON load/headroom figures (stats/capacity.py) of
                                                      its scrapes in that time bucket (capacity.max_age long); the
                                                      reader takes each worker's newest over four buckets

Controller and on-call keys carry the hash tag `{svc}` (one slot per service):

    {p}:{svc}:controller:state | :lease | :lease_token     the controller's state and its leader lease
    {p}:{svc}:override:region:{r} | :override:freeze       on-call overrides

(`{r}` and `{svc}` above are written with their braces: they are the hash tags.) Stamps are unix seconds on
Redis's clock: an agent whose own clock is off re-stamps its samples (sink.py).
"""

from __future__ import annotations

EPOCH_SLICES = 64  # slices per index key: bounds the index's fields and lets it expire


def series_id(worker: str, model: str) -> str:
    """`worker|model`; worker names never contain '|' (policy names, DNS host names)."""
    return f"{worker}|{model}"


def split_series(series: str) -> tuple[str, str]:
    worker, _, model = series.partition("|")
    return worker, model


def region_base(prefix: str, service: str, region: str) -> str:
    """`{p}:{svc}:{region}`: every statistics key of one region starts with this (and a ':')."""
    return f"{prefix}:{service}:{{{region}}}"


def slice_key(prefix: str, service: str, region: str, slice_id: int, series: str) -> str:
    return f"{region_base(prefix, service, region)}:s:{slice_id}:{series}"


def region_slice_key(prefix: str, service: str, region: str, slice_id: int) -> str:
    return f"{region_base(prefix, service, region)}:a:{slice_id}"


def epoch_of(slice_id: int) -> int:
    return slice_id // EPOCH_SLICES


def index_key(prefix: str, service: str, region: str, epoch: int) -> str:
    return f"{region_base(prefix, service, region)}:idx:{epoch}"


def newest_key(prefix: str, service: str, region: str) -> str:
    return f"{region_base(prefix, service, region)}:newest"


def recent_key(prefix: str, service: str, region: str) -> str:
    return f"{region_base(prefix, service, region)}:recent"


def heartbeat_key(prefix: str, service: str, region: str) -> str:
    return f"{region_base(prefix, service, region)}:hb"


def batch_key(prefix: str, service: str, region: str, slice_id: int) -> str:
    """Hash: batch id → samples, one field per sample batch written in that slice (a retried batch lands once)."""
    return f"{region_base(prefix, service, region)}:b:{slice_id}"


def capacity_key(prefix: str, service: str, region: str, bucket: int) -> str:
    """Live capacity figures of a region's workers written in one time bucket (HSET + EXPIRE: an agent's ACL)."""
    return f"{region_base(prefix, service, region)}:cap:{bucket}"


# ---- per service (controller and on-call): hash tag {service} keeps them in one Redis Cluster slot


def service_base(prefix: str, service: str) -> str:
    """`{p}:{svc}`: every controller and on-call key starts with this (and a ':')."""
    return f"{prefix}:{{{service}}}"


def controller_state_key(prefix: str, service: str) -> str:
    """JSON of the controller's `ControllerState` (region states, timers, last matrix)."""
    return f"{service_base(prefix, service)}:controller:state"


def lease_key(prefix: str, service: str) -> str:
    """The leader lease: `holder:token`, with a PX expiry."""
    return f"{service_base(prefix, service)}:controller:lease"


def lease_token_key(prefix: str, service: str) -> str:
    """Fencing-token counter, INCR on every acquisition."""
    return f"{service_base(prefix, service)}:controller:lease_token"


def override_region_key(prefix: str, service: str, region: str) -> str:
    return f"{service_base(prefix, service)}:override:region:{region}"


def override_freeze_key(prefix: str, service: str) -> str:
    return f"{service_base(prefix, service)}:override:freeze"


def audit_key(prefix: str, service: str) -> str:
    """The audit stream (XADD, capped by MAXLEN ~ and MINID by age): decisions, guards, overrides, Route 53."""
    return f"{service_base(prefix, service)}:audit"


# ---- Redis ACL users (`redis.acl_users: true`; `trafficd redis acl` prints their rules)

ROLES = ("agent", "controller", "oncall")


def acl_username(service: str, role: str, region: str | None = None) -> str:
    """`{svc}-agent-{region}` (one user per region's agents), `{svc}-controller`, `{svc}-oncall`."""
    if role == "agent":
        if region is None:
            raise ValueError("an agent's ACL user names its region")
        return f"{service}-agent-{region}"
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    return f"{service}-{role}"


def leader_report_key(prefix: str, service: str) -> str:
    """JSON of the leader's last evaluation: evaluation id, policy hash, dry-run, time (for `trafficd status`)."""
    return f"{service_base(prefix, service)}:controller:last_evaluation"


def watcher_key(prefix: str, service: str, watcher_id: str) -> str:
    """JSON {id, policy_hash, at} of one dry-run controller, with a TTL of a few evaluations (for `status`)."""
    return f"{service_base(prefix, service)}:controller:watcher:{watcher_id}"


def watcher_pattern(prefix: str, service: str) -> str:
    """SCAN pattern matching every dry-run watcher key of a service."""
    return f"{service_base(prefix, service)}:controller:watcher:*"
