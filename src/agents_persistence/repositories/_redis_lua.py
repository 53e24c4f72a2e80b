"""The Lua scripts of the Redis store: each operation that touches more than one key is one script.

A script runs atomically, so a record, its pieces, its two index entries and its TTL change
together or not at all, and a load reads a record and the pieces of that same version. Every
key a script touches shares the namespace's hash tag, so the scripts run unchanged on Redis
Cluster. Timestamps are integer microseconds since the Unix epoch, passed as decimal
strings; they stay exact in Lua's doubles for every date between the years 1685 and 2255.

Index invariants the scripts keep: a thread is in the ``updated`` index iff its hash exists,
with score ``updated_at``; it is in the ``expires`` index iff its hash exists and has a TTL,
with score ``expires_at``. Only Redis itself breaks the first half of both (it expires hashes
but not sorted-set members): listings and purges drop such dangling entries.

The scripts name no hash field themselves: they are templates whose ``$name`` placeholders
`render_scripts` fills with the record model's field names, and whose ``$listed`` is the list of
fields a listing reads (a literal dollar sign is written ``$$``). A template that names a
field the model lacks cannot be rendered.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from string import Template
from typing import TYPE_CHECKING

from agents_persistence.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["PAGE", "PURGE", "READ", "REMOVE", "WRITE", "Script", "Scripts", "render_scripts"]

# Redis runs a script without interruption but does not roll it back: a command failing halfway
# leaves the earlier writes in place. The only failure a write can meet once it has started is a
# key holding a foreign type (WRONGTYPE), so scripts that write check every key's type first.
_GUARD = """
local function foreign(expected)
  for i = 1, #expected, 2 do
    local kind = redis.call('TYPE', expected[i])['ok']
    if kind ~= 'none' and kind ~= expected[i + 1] then
      return 'WRONGTYPE ' .. expected[i] .. ' holds a ' .. kind .. ', not a ' .. expected[i + 1]
    end
  end
  return nil
end
"""

WRITE = (
    _GUARD
    + """
-- KEYS: 1 thread hash, 2 updated index, 3 expires index, 4 the thread's pieces hash
-- ARGV: 1 thread id, 2 write id, 3 expected version ('' = any), 4 version to store
--       ('' = live + 1), 5 created_at to store ('' = keep), 6 now = updated_at,
--       7 expires_at ('' = never), 8 TTL in ms ('' = none, <= 0 = already expired),
--       9 token of the manifest this save is a delta on ('' = a full write),
--       10 F = how many values the record's fields take, 11 D = how many pieces to drop,
--       12 .. 11 + F every field of the record in the model's order, as name/value pairs
--       (the values of the version and created_at fields are decided here),
--       then D piece keys to drop, then the new pieces as key/body pairs.
-- Returns {'ok' or 'done', version, created_at}, {'conflict', live version or -1},
-- {'corrupt', why}, or {'full'}: the delta's base is not the stored version (another
-- writer, an expired or deleted thread, a record stored whole): nothing was written.
local problem = foreign({KEYS[1], 'hash', KEYS[2], 'zset', KEYS[3], 'zset', KEYS[4], 'hash'})
if problem then
  return redis.error_reply(problem)
end
local now = tonumber(ARGV[6])
local live = redis.call('HMGET', KEYS[1], $version, $created_at, $expires_at, $write_id, $manifest)
local live_version, live_created, live_token = nil, nil, nil
if live[1] or live[2] or live[3] or live[4] then
  local version = tonumber(live[1])
  -- created_at is kept as stored and read back by the client: it must be an integer of
  -- microseconds within the years 1 to 9999 (what a Python datetime holds).
  local created = live[2] and string.match(live[2], '^%s*[%+%-]?%d+%s*$$') and tonumber(live[2])
  if version == nil or not created
    or created < -62135596800000000 or created >= 253402300800000000 then
    return {'corrupt', 'version or created_at is missing, not an integer or out of range'}
  end
  local alive = true
  if live[3] and live[3] ~= '' then
    local expires = tonumber(live[3])
    if expires == nil then
      return {'corrupt', 'expires_at is not a number'}
    end
    alive = expires > now
  end
  if alive then
    if live[4] == ARGV[2] then
      -- The client retried a write whose reply it lost: it is already applied.
      return {'done', version, live[2]}
    end
    live_version, live_created = version, live[2]
    -- The manifest's token, where Manifest.to_json puts it: right after the format number.
    -- Any other spelling finds no token, and the client sends the full write.
    live_token = live[5] and string.match(live[5], '^{"f":%d+,"t":"([^"]+)"')
  end
end
if ARGV[3] ~= '' and tonumber(ARGV[3]) ~= (live_version or 0) then
  return {'conflict', live_version or -1}
end
local full = ARGV[9] == ''
if not full and ARGV[9] ~= live_token then
  return {'full'}
end
local version = (live_version or 0) + 1
if ARGV[4] ~= '' then
  version = tonumber(ARGV[4])
end
local created = ARGV[5]
if created == '' then
  created = live_created or ARGV[6]
end
redis.call('DEL', KEYS[1])
if full then
  redis.call('DEL', KEYS[4])
end
local ttl = ARGV[8]
if ttl ~= '' and tonumber(ttl) <= 0 then
  -- A restored record that has already expired: the thread ends up absent.
  redis.call('DEL', KEYS[4])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  return {'ok', version, created}
end
local first, drops = 12, tonumber(ARGV[11])
local last = first + tonumber(ARGV[10]) - 1
local fields = {}
for i = first, last, 2 do
  local name, value = ARGV[i], ARGV[i + 1]
  if name == $version then
    value = version
  elseif name == $created_at then
    value = created
  end
  fields[#fields + 1] = name
  fields[#fields + 1] = value
end
redis.call('HSET', KEYS[1], unpack(fields))
-- Pieces in batches: Lua's unpack takes a few thousand values at most. 1000 is even, so
-- key/body pairs stay together.
local function batched(command, from, to)
  for i = from, to, 1000 do
    redis.call(command, KEYS[4], unpack(ARGV, i, math.min(i + 999, to)))
  end
end
batched('HDEL', last + 1, last + drops)
batched('HSET', last + drops + 1, #ARGV)
-- The indexes live as long as their longest-lived member, so a namespace whose threads all
-- expired disappears entirely even if nobody lists or purges it: a fresh index takes this
-- TTL, an existing one only ever extends it (GT), and one holding a thread without TTL keeps
-- none. The expires index lives exactly as long as the updated index, so a purge always
-- finds the entries that the updated index still holds for expired threads.
local fresh = redis.call('EXISTS', KEYS[2]) == 0
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
if ttl == '' then
  redis.call('PERSIST', KEYS[4])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('PERSIST', KEYS[2])
else
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[4], ttl)
  redis.call('ZADD', KEYS[3], ARGV[7], ARGV[1])
  if fresh then
    redis.call('PEXPIRE', KEYS[2], ttl)
  else
    redis.call('PEXPIRE', KEYS[2], ttl, 'GT')
  end
end
local left = redis.call('PTTL', KEYS[2])
if left > 0 then
  redis.call('PEXPIRE', KEYS[3], left)
else
  redis.call('PERSIST', KEYS[3])
end
return {'ok', version, created}
"""
)

READ = """
-- KEYS: 1 thread hash, 2 the thread's pieces hash; ARGV: 1 now (microseconds)
-- Returns {} when there is no record, else {record field/value pairs, piece key/body pairs};
-- the pieces are left out for a record expired at ARGV[1] or stored whole (no manifest).
local record = redis.call('HGETALL', KEYS[1])
if #record == 0 then
  return {}
end
local expires, manifest = nil, nil
for i = 1, #record, 2 do
  local name = record[i]
  if name == $expires_at then
    expires = tonumber(record[i + 1])
  elseif name == $manifest then
    manifest = record[i + 1]
  end
end
if not manifest or manifest == '' or (expires and expires <= tonumber(ARGV[1])) then
  return {record, {}}
end
return {record, redis.call('HGETALL', KEYS[2])}
"""

REMOVE = (
    _GUARD
    + """
-- KEYS: 1 thread hash, 2 updated index, 3 expires index, 4 the thread's pieces hash
-- ARGV: 1 thread id, 2 now
-- Returns 1 if a live record was deleted; an expired one is deleted too but counts as absent.
local problem = foreign({KEYS[1], 'hash', KEYS[2], 'zset', KEYS[3], 'zset', KEYS[4], 'hash'})
if problem then
  return redis.error_reply(problem)
end
local expires = redis.call('HGET', KEYS[1], $expires_at)
local existed = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[4])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if existed == 0 then
  return 0
end
if expires and expires ~= '' then
  local at = tonumber(expires)
  if at ~= nil and at <= tonumber(ARGV[2]) then
    return 0
  end
end
return 1
"""
)

PAGE = (
    _GUARD
    + """
-- KEYS: 1 updated index, 2 expires index
-- ARGV: 1 thread key prefix, 2 rows wanted, 3 most dangling entries to drop,
--       4 '1' to start after a position ('' from the top), 5 its score, 6 its thread id
-- Walks the updated index newest first, (score, thread id) descending, strictly after the
-- position. Returns {exhausted, last score, last thread id, rows...}, a row being the thread
-- id then the values of the listed fields (every field but the state and the write id), in
-- the model's order. Entries whose hash Redis has
-- expired are removed on the way. Expiry against the caller's clock is left to the caller.
local problem = foreign({KEYS[1], 'zset', KEYS[2], 'zset'})
if problem then
  return redis.error_reply(problem)
end

local function before(a, b)
  -- Bytewise a < b, the order Redis gives equal scores (Lua's own < follows the locale).
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      return x < y
    end
  end
  return #a < #b
end

local index = KEYS[1]
local rank = 0
if ARGV[4] == '1' then
  local score, member = ARGV[5], ARGV[6]
  -- In descending order the entries scored above the position come first, then the ties,
  -- by thread id descending: binary search the ties for the first id below the position's.
  local lo = redis.call('ZCOUNT', index, '(' .. score, '+inf')
  local hi = lo + redis.call('ZCOUNT', index, score, score)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if before(redis.call('ZRANGE', index, mid, mid, 'REV')[1], member) then
      hi = mid
    else
      lo = mid + 1
    end
  end
  rank = lo
end

local wanted, budget = tonumber(ARGV[2]), tonumber(ARGV[3])
local rows, found, dropped = {}, 0, 0
local last_score, last_member = false, false
local exhausted = 0
while found < wanted and dropped < budget do
  local size = wanted - found
  local entries = redis.call('ZRANGE', index, rank, rank + size - 1, 'REV', 'WITHSCORES')
  local removed = 0
  for i = 1, #entries, 2 do
    local member = entries[i]
    last_member, last_score = member, entries[i + 1]
    local key = ARGV[1] .. member
    local f = redis.call('HMGET', key, $listed)
    local present = false
    for j = 1, #f do
      present = present or f[j]
    end
    if present or redis.call('EXISTS', key) == 1 then
      rows[#rows + 1] = member
      for j = 1, #f do
        rows[#rows + 1] = f[j]
      end
      found = found + 1
    else
      redis.call('ZREM', index, member)
      redis.call('ZREM', KEYS[2], member)
      removed = removed + 1
      dropped = dropped + 1
      if dropped >= budget then
        break
      end
    end
  end
  if #entries < 2 * size then
    if dropped < budget or #entries == 0 then
      exhausted = 1
    end
    break
  end
  rank = rank + #entries / 2 - removed
end
local out = {exhausted, last_score, last_member}
for i = 1, #rows do
  out[#out + 1] = rows[i]
end
return out
"""
)

PURGE = (
    _GUARD
    + """
-- KEYS: 1 updated index, 2 expires index
-- ARGV: 1 thread key prefix, 2 now, 3 batch size, 4 pieces key prefix
-- Deletes up to one batch of threads expired at ARGV[2]: the hash and its pieces if Redis has
-- not already removed them, and both index entries. Returns how many threads it removed.
local problem = foreign({KEYS[1], 'zset', KEYS[2], 'zset'})
if problem then
  return redis.error_reply(problem)
end
local expired = redis.call('ZRANGE', KEYS[2], '-inf', ARGV[2], 'BYSCORE', 'LIMIT', 0, ARGV[3])
for _, member in ipairs(expired) do
  redis.call('DEL', ARGV[1] .. member, ARGV[4] .. member)
  redis.call('ZREM', KEYS[1], member)
  redis.call('ZREM', KEYS[2], member)
end
return #expired
"""
)


class Script:
    """A script's source and the SHA1 that ``EVALSHA`` names it by.

    Attributes:
        source: The Lua text, sent with ``EVAL`` when the server answers ``NOSCRIPT``
            (after a restart or a failover), which also caches it there again.
        sha: Hex SHA1 of the UTF-8 source.
    """

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Scripts:
    """The five scripts, rendered for one record model's fields."""

    write: Script
    read: Script
    remove: Script
    page: Script
    purge: Script


_FIELD_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _literal(name: str) -> str:
    # Field names are Python identifiers (pydantic fields), so a quoted name needs no escaping.
    if not _FIELD_NAME_RE.fullmatch(name):
        raise ConfigurationError(f"record field name {name!r} is not an identifier")
    return f"'{name}'"


def render_scripts(fields: Sequence[str], listed: Sequence[str]) -> Scripts:
    """The scripts for a record whose hash has ``fields``, listings reading ``listed``.

    Args:
        fields: Every stored field, in the model's order.
        listed: The fields a listing reads for each thread (a subset of ``fields``), in the
            order the rows of a ``page`` reply carry them.

    Raises:
        ConfigurationError: a template names a field that ``fields`` lacks, or ``listed`` is
            empty or holds a field that ``fields`` lacks.
    """
    names = {name: _literal(name) for name in fields}
    if not listed or not set(listed) <= set(fields):
        raise ConfigurationError(f"listed fields {tuple(listed)} are not fields of the record")
    names["listed"] = ", ".join(names[name] for name in listed)
    try:
        templates = (WRITE, READ, REMOVE, PAGE, PURGE)
        return Scripts(*(Script(Template(text).substitute(names)) for text in templates))
    except KeyError as exc:
        raise ConfigurationError(
            f"the Redis scripts need record field {exc.args[0]!r}, which the model lacks"
        ) from None
