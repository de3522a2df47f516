"""One region's sample batch written by one Lua script: applied whole, or not at all (docs/stats.md, "Writer").

MULTI/EXEC is not all-or-nothing: when Redis refuses one queued command at run time (`WRONGTYPE`: another
program's key of the wrong type at one of ours) it still applies every other one, so a batch landed in part —
some slices' counts without the region aggregate, the index or the recent list. The script first checks every
condition another program's data could break (each key's type, each index field still holding a count), that
this user may run each write (Redis >= 7: `redis.acl_check_cmd`), and the batch marker, and only then writes;
a script runs atomically, so a batch lands whole or not at all, and its marker with it.

    KEYS[1]   the batch marker (hash: batch id → samples), KEYS[2..] the other keys the operations name
    ARGV[1]   batch id, ARGV[2] its sample count; both empty for a write without a marker (a heartbeat), whose
              KEYS are then only the operations' keys
    ARGV[3..] operations, each `<command> <key index> <argument count> <arguments...>`; commands: BITFIELD
              (string), HSET and HINCRBY (hash), LPUSH and LTRIM (list), EXPIRE (any)

Returns 1 when it wrote the batch, 0 when the marker shows the batch had landed already (a retry after a lost
reply), and an error naming the key (`WRONGTYPE …`) when it wrote nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError

from trafficd.stats import sketch

LUA = b"""
local WANTS = {BITFIELD = 'string', HSET = 'hash', HINCRBY = 'hash', LPUSH = 'list', LTRIM = 'list', EXPIRE = ''}
local ops, i = {}, 3
while i <= #ARGV do
  local cmd, k, n = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  if WANTS[cmd] == nil or KEYS[k] == nil or n == nil then
    return redis.error_reply('ERR trafficd batch: malformed operation at ARGV[' .. i .. ']')
  end
  ops[#ops + 1] = {cmd, k, i + 3, i + 2 + n}
  i = i + 3 + n
end
local typed = {}
local function wrong(key, want)
  if want == '' or typed[key] == want then return nil end
  typed[key] = want
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then
    return 'WRONGTYPE trafficd wrote nothing: ' .. key .. ' holds a ' .. t .. ', trafficd writes a ' .. want
  end
end
local function denied(cmd, key)  -- Redis >= 7 checks a script's ACL per call: ask before the first write
  if redis.acl_check_cmd and not redis.acl_check_cmd(cmd, key) then
    return 'NOPERM trafficd wrote nothing: this user may not run ' .. cmd .. ' on ' .. key
  end
end
local err
if ARGV[1] ~= '' then
  err = wrong(KEYS[1], 'hash') or denied('HSET', KEYS[1])
  if err then return redis.error_reply(err) end
  if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
end
for _, op in ipairs(ops) do
  err = wrong(KEYS[op[2]], WANTS[op[1]]) or denied(op[1], KEYS[op[2]])
  if err then return redis.error_reply(err) end
  if op[1] == 'HINCRBY' then
    local v = redis.call('HGET', KEYS[op[2]], ARGV[op[3]])
    if v and not ((v == '0' or string.find(v, '^%-?[1-9]%d*$')) and #v <= 15) then
      return redis.error_reply('ERR trafficd wrote nothing: ' .. KEYS[op[2]] .. ' field ' .. ARGV[op[3]]
        .. ' holds ' .. string.sub(v, 1, 40) .. ', not a count')
    end
  end
end
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
for _, op in ipairs(ops) do
  redis.call(op[1], KEYS[op[2]], unpack(ARGV, op[3], op[4]))
end
return 1
"""
SHA = hashlib.sha1(LUA).hexdigest()

MAX_ARGS = 4000  # arguments per operation: Lua's unpack() is bounded by its C stack (8,000 in Redis); a slice
# touches at most 4 + 2 × 612 words (both metrics' buckets from 5 ms to 1,000 s), 4,914 arguments: two parts at most


def series_increments(words: dict[int, int]) -> list[tuple[bytes, bytes, int]]:
    """A series slice's BITFIELD increments: u16 words (`#<word>`)."""
    return [(b"u16", b"#%d" % word, inc) for word, inc in sorted(words.items())]


def aggregate_increments(words: dict[int, int]) -> list[tuple[bytes, bytes, int]]:
    """The region aggregate's BITFIELD increments: u32 header words (never saturate), u16 bucket words."""
    return [(kind.encode(), b"%d" % offset, inc) for kind, offset, inc in sketch.aggregate_fields(words)]


class Operations:
    """KEYS and ARGV of one batch's script, built operation by operation (arguments pre-encoded as bytes)."""

    def __init__(self, marker_key: str | None = None, batch_id: str = "", samples: int = 0) -> None:
        """With a marker (a sample batch) or without (a heartbeat: HSET and EXPIRE, type-checked the same way)."""
        self.keys: list[str] = [marker_key] if marker_key else []
        self._index = {marker_key: 1} if marker_key else {}
        self.args: list[bytes] = [batch_id.encode(), b"%d" % samples] if marker_key else [b"", b""]

    def add(self, command: bytes, key: str, args: Sequence[bytes]) -> None:
        """One operation on `key` (keys are numbered once, in order of first use)."""
        index = self._index.get(key)
        if index is None:
            self.keys.append(key)
            index = self._index[key] = len(self.keys)
        self.args += (command, b"%d" % index, b"%d" % len(args), *args)

    def bitfield(self, key: str, increments: Sequence[tuple[bytes, bytes, int]]) -> None:
        """`BITFIELD key OVERFLOW SAT INCRBY <type> <offset> <inc> …`, split so no operation exceeds MAX_ARGS.

        `increments` come in rising offsets; the parts are sent highest first, so the first one sizes the string
        once (a BITFIELD that extends a string grows it to twice what it needs)."""
        per_op = (MAX_ARGS - 2) // 4
        for start in reversed(range(0, len(increments), per_op)):
            args = [b"OVERFLOW", b"SAT"]
            for kind, offset, inc in increments[start : start + per_op]:
                args += (b"INCRBY", kind, offset, b"%d" % inc)
            self.add(b"BITFIELD", key, args)

    def chunked(self, command: bytes, key: str, values: Sequence[bytes], step: int = 1) -> None:
        """HSET (step 2: field, value) or LPUSH of many values, split so no operation exceeds MAX_ARGS (LPUSH of
        the parts in order pushes the same list as one LPUSH of all)."""
        size = MAX_ARGS - MAX_ARGS % step
        for start in range(0, len(values), size):
            self.add(command, key, values[start : start + size])


async def run(client: Any, ops: Operations) -> bool:
    """Run the batch script (EVALSHA, EVAL when Redis does not have it cached): True when it wrote the batch,
    False when the batch had landed already. Raises what redis-py raises (a refusal writes nothing)."""
    try:
        result = await client.evalsha(SHA, len(ops.keys), *ops.keys, *ops.args)
    except NoScriptError:  # a new or restarted server, a failover to a replica that never ran it
        result = await client.eval(LUA, len(ops.keys), *ops.keys, *ops.args)
    return bool(result)
