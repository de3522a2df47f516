"""The fence, as pure data: the writer-epoch TXT record and what makes a batch stale (docs/route53.md).

Every batch a provider sends asserts the writer epoch (DELETE + CREATE of the same value of the owned TXT record
`_trafficd-epoch.<record name>`), a new leader bumps it (`epoch_record(n + 1)` replacing `epoch_record(n)`), and
each replaced record is deleted exactly as it was read: a provider that applies batches all or nothing then
refuses a batch built on a stale read or sent by a deposed writer (`stale_problems` says why, the way
`MemoryProvider` judges it; Route 53 and the test proxy judge it themselves).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from trafficd.dns.names import Key, key_text, normalize_name
from trafficd.dns.records import Change
from trafficd.model import Record
from trafficd.policy.schema import Policy

EPOCH_PREFIX = "trafficd-writer-epoch="
_EPOCH_RE = re.compile(r'^"?' + re.escape(EPOCH_PREFIX) + r'(\d+)"?$')


def epoch_name(policy: Policy) -> str:
    """The owned TXT record holding the writer epoch: `_trafficd-epoch.{record name}`."""
    return normalize_name("_trafficd-epoch." + normalize_name(policy.dns.record_name))


def epoch_record(policy: Policy, epoch: int) -> Record:
    """The epoch TXT record (simple routing, TTL 60, one quoted value)."""
    return Record(epoch_name(policy), "TXT", "", ttl=60, values=(f'"{EPOCH_PREFIX}{epoch}"',))


def epoch_from(policy: Policy, records: Iterable[Record]) -> tuple[Record | None, int | None]:
    """The epoch record as read (None when absent) and its epoch (None when absent or not ours)."""
    key = (epoch_name(policy), "TXT", "")
    for r in records:
        if r.key == key:
            m = _EPOCH_RE.match(r.values[0]) if len(r.values) == 1 else None
            return r, int(m.group(1)) if m else None
    return None, None


def fence_for(policy: Policy, zone: Iterable[Record], epoch: int | None) -> tuple[bool, Change | None, int | None]:
    """(may write, the epoch assertion heading every batch, the epoch seen) for a writer holding `epoch`.

    No epoch record and no epoch held: writing is allowed without an assertion (no fence taken yet; the exact
    DELETEs still refuse stale batches). Otherwise the record must hold exactly the writer's epoch.
    """
    record, seen = epoch_from(policy, zone)
    if record is None and epoch is None:
        return True, None, None
    if record is None or seen != epoch:
        return False, None, seen
    return True, Change(record, record), seen


def stale_problems(zone: Mapping[Key, Record], changes: Iterable[Change]) -> list[str]:
    """Why a provider that applies batches all or nothing would refuse these changes as built on a stale read:
    a `before` that is not the record as it is now, or a CREATE (`before` None) of a record that exists."""
    state = dict(zone)
    out = []
    for c in changes:
        k = c.after.key
        if c.before is not None and state.get(c.before.key) != c.before:
            missing = c.before.key not in state
            out.append(f"{key_text(c.before.key)}: {'not found' if missing else 'values do not match'}")
            continue
        if c.before is None and k in state:
            out.append(f"{key_text(k)}: already exists")
            continue
        if c.before is not None:
            del state[c.before.key]
        state[k] = c.after
    return out
