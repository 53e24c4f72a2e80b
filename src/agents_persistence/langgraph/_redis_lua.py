"""The Lua scripts of the Redis savers: every write of a thread is one script on one hash slot.

A thread's data lives in eight keys that share the thread's cluster hash tag (see
`_redis_plans.ThreadKeys`), so each script runs unchanged on Redis Cluster and changes a
checkpoint, its channel values, its writes and the thread's TTL together or not at all:

1. ``cp``: sorted set, members ``ns NUL checkpoint_id`` (a namespace's checkpoints, by id);
2. ``ord``: sorted set, members ``checkpoint_id NUL ns`` (the thread's checkpoints, by id);
3. ``run``: sorted set, members ``run_id NUL ns NUL checkpoint_id`` (checkpoints by run);
4. ``rec``: hash ``ns NUL checkpoint_id`` -> the checkpoint without values, and its metadata;
5. ``refs``: hash ``ns NUL checkpoint_id`` -> run id and the blob fields the checkpoint uses;
6. ``blobs``: hash ``ns NUL channel NUL version`` -> type, newline, serialized value;
7. ``widx``: sorted set of the write fields (``ns NUL checkpoint_id NUL task_id NUL idx``);
8. ``writes``: hash write field -> header, newline, serialized value.

Every member of the sorted sets has score 0, so ``BYLEX`` ranges order and select them. A
``refs`` value is a list of netstrings (``<byte length>:<bytes>``): first the run id (empty for
none), then the blob fields. All keys of a thread carry the same expiry: a script sets it on
each (the saver's TTL, or the thread's current one when the saver has none), so Redis expires
the whole thread at one instant; scripts see Redis time frozen while they run.
"""

from __future__ import annotations

from agents_persistence.repositories._redis_lua import Script

__all__ = ["COPY_IN", "COPY_OUT", "DELETE", "DELETE_RUNS", "PAGE", "PRUNE", "PUT", "PUT_WRITES"]

_COMMON = r"""
local CP, ORD, RUN, REC, REFS, BLOBS, WIDX, WRITES =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local CHUNK = 500

local function guard()
  local kinds = {'zset', 'zset', 'zset', 'hash', 'hash', 'hash', 'zset', 'hash'}
  for i = 1, 8 do
    local kind = redis.call('TYPE', KEYS[i])['ok']
    if kind ~= 'none' and kind ~= kinds[i] then
      return 'WRONGTYPE ' .. KEYS[i] .. ' holds a ' .. kind .. ', not a ' .. kinds[i]
    end
  end
  return nil
end

local function chunked(command, key, list)
  for i = 1, #list, CHUNK do
    redis.call(command, key, unpack(list, i, math.min(i + CHUNK - 1, #list)))
  end
end

local function hmget(key, fields)
  local out = {}
  for i = 1, #fields, CHUNK do
    local part = redis.call('HMGET', key, unpack(fields, i, math.min(i + CHUNK - 1, #fields)))
    for j = 1, #part do out[#out + 1] = part[j] end
  end
  return out
end

local function split(s)
  local out, i = {}, 1
  while i <= #s do
    local colon = string.find(s, ':', i, true)
    local n = tonumber(string.sub(s, i, colon - 1))
    out[#out + 1] = string.sub(s, colon + 1, colon + n)
    i = colon + n + 1
  end
  return out
end

-- The expiry every key of the thread gets after a write: the saver's TTL in ms, or the
-- thread's current one (read before the write) when the saver has none; nil for none.
local function expiry(ttl_ms)
  if ttl_ms ~= '' then return tonumber(ttl_ms) end
  for i = 1, 8 do
    local left = redis.call('PTTL', KEYS[i])
    if left > 0 then return left end
  end
  return nil
end

local function expire(ms)
  if ms then
    for i = 1, 8 do redis.call('PEXPIRE', KEYS[i], ms) end
  end
end

local function writes_of(member)
  return redis.call('ZRANGE', WIDX, '(' .. member .. '\0', '(' .. member .. '\1', 'BYLEX')
end

-- Delete one checkpoint (member: ns NUL id) and its writes; return its namespace and the
-- blob fields it used (candidates for collection).
local function drop(member)
  local sep = string.find(member, '\0', 1, true)
  local ns, id = string.sub(member, 1, sep - 1), string.sub(member, sep + 1)
  local used = {}
  local refs = redis.call('HGET', REFS, member)
  if refs then
    local list = split(refs)
    if list[1] ~= '' then redis.call('ZREM', RUN, list[1] .. '\0' .. member) end
    for i = 2, #list do used[#used + 1] = list[i] end
  end
  redis.call('ZREM', CP, member)
  redis.call('ZREM', ORD, id .. '\0' .. ns)
  redis.call('HDEL', REC, member)
  redis.call('HDEL', REFS, member)
  local writes = writes_of(member)
  if #writes > 0 then
    chunked('HDEL', WRITES, writes)
    chunked('ZREM', WIDX, writes)
  end
  return ns, used
end

-- Delete the candidate blob fields of namespace ns that no checkpoint left there uses.
local function collect(ns, candidates)
  if #candidates == 0 then return end
  local used = {}
  local members = redis.call('ZRANGE', CP, '(' .. ns .. '\0', '(' .. ns .. '\1', 'BYLEX')
  if #members > 0 then
    for _, refs in ipairs(hmget(REFS, members)) do
      if refs then
        local list = split(refs)
        for i = 2, #list do used[list[i]] = true end
      end
    end
  end
  local doomed = {}
  for _, field in ipairs(candidates) do
    if not used[field] then
      doomed[#doomed + 1] = field
      used[field] = true
    end
  end
  if #doomed > 0 then chunked('HDEL', BLOBS, doomed) end
end

-- Drop the members, then collect the blobs they alone used, namespace by namespace.
local function drop_all(members)
  local candidates, order = {}, {}
  for _, member in ipairs(members) do
    local ns, used = drop(member)
    if not candidates[ns] then
      candidates[ns] = {}
      order[#order + 1] = ns
    end
    for _, field in ipairs(used) do table.insert(candidates[ns], field) end
  end
  for _, ns in ipairs(order) do collect(ns, candidates[ns]) end
  return #members
end
"""

_GUARDED = """
local problem = guard()
if problem then return redis.error_reply(problem) end
"""

PUT = Script(
    _COMMON
    + _GUARDED
    + r"""
-- ARGV: 1 TTL in ms ('' = keep the thread's), 2 keep_last ('' = all), 3 member (ns NUL id),
-- 4 ordered member (id NUL ns), 5 record, 6 refs, 7 run id member ('' = none), 8 namespace,
-- 9 '1' for write ownership, 10 the parent id ('' = none), 11 the checkpoint id,
-- 12.. blob field / value pairs (stored unless present)
-- Returns 1, or {0, latest id} when write ownership refuses the put (nothing written).
local member = ARGV[3]
if ARGV[9] ~= '' then
  local ns = ARGV[8]
  local top = redis.call('ZRANGE', CP, '(' .. ns .. '\1', '(' .. ns .. '\0', 'BYLEX', 'REV',
    'LIMIT', 0, 1)
  local latest = ''
  if #top > 0 then latest = string.sub(top[1], #ns + 2) end
  if latest ~= ARGV[10] then
    -- The latest again with the same parent: a retry after a lost reply.
    local retry = false
    if latest == ARGV[11] then
      local parent = cjson.decode(redis.call('HGET', REC, member))['parent']
      if parent == cjson.null or parent == nil then parent = '' end
      retry = parent == ARGV[10]
    end
    if not retry then return {0, latest} end
  end
end
local ms = expiry(ARGV[1])
for i = 12, #ARGV, 2 do redis.call('HSETNX', BLOBS, ARGV[i], ARGV[i + 1]) end
local old = redis.call('HGET', REFS, member)
if old then
  local list = split(old)
  if list[1] ~= '' then redis.call('ZREM', RUN, list[1] .. '\0' .. member) end
end
redis.call('HSET', REC, member, ARGV[5])
redis.call('HSET', REFS, member, ARGV[6])
redis.call('ZADD', CP, 0, member)
redis.call('ZADD', ORD, 0, ARGV[4])
if ARGV[7] ~= '' then redis.call('ZADD', RUN, 0, ARGV[7]) end
if ARGV[2] ~= '' then
  local ns = ARGV[8]
  local beyond = redis.call('ZRANGE', CP, '(' .. ns .. '\1', '(' .. ns .. '\0', 'BYLEX', 'REV',
    'LIMIT', tonumber(ARGV[2]), CHUNK)
  drop_all(beyond)
end
expire(ms)
return 1
"""
)

PUT_WRITES = Script(
    _COMMON
    + _GUARDED
    + r"""
-- ARGV: 1 TTL in ms ('' = keep the thread's), 2 '1' to overwrite stored writes,
-- 3.. write field / value pairs
local ms = expiry(ARGV[1])
for i = 3, #ARGV, 2 do
  if ARGV[2] == '1' then
    redis.call('HSET', WRITES, ARGV[i], ARGV[i + 1])
  else
    redis.call('HSETNX', WRITES, ARGV[i], ARGV[i + 1])
  end
  redis.call('ZADD', WIDX, 0, ARGV[i])
end
expire(ms)
return 1
"""
)

PAGE = Script(
    _COMMON
    + r"""
-- ARGV: 1 'cp' (members ns NUL id) or 'ord' (members id NUL ns), 2 lowest and 3 highest
-- BYLEX bound, 4 count. Reply: per checkpoint, newest first: {member, record,
-- {blob field, blob value...}, {write value...}}.
local zset = ARGV[1] == 'cp' and CP or ORD
local found = redis.call('ZRANGE', zset, ARGV[3], ARGV[2], 'BYLEX', 'REV', 'LIMIT', 0,
  tonumber(ARGV[4]))
local reply = {}
for _, entry in ipairs(found) do
  local member = entry
  if zset == ORD then
    local sep = string.find(entry, '\0', 1, true)
    member = string.sub(entry, sep + 1) .. '\0' .. string.sub(entry, 1, sep - 1)
  end
  local record = redis.call('HGET', REC, member)
  if record then
    local blobs = {}
    local refs = redis.call('HGET', REFS, member)
    if refs then
      local list = split(refs)
      local fields = {}
      for i = 2, #list do fields[#fields + 1] = list[i] end
      if #fields > 0 then
        local values = hmget(BLOBS, fields)
        for i = 1, #fields do
          if values[i] then
            blobs[#blobs + 1] = fields[i]
            blobs[#blobs + 1] = values[i]
          end
        end
      end
    end
    local writes = {}
    local fields = writes_of(member)
    if #fields > 0 then
      for _, value in ipairs(hmget(WRITES, fields)) do
        if value then writes[#writes + 1] = value end
      end
    end
    reply[#reply + 1] = {member, record, blobs, writes}
  end
end
return {#found, reply}
"""
)

DELETE = Script(
    r"""
-- Delete every key of the thread.
return redis.call('DEL', unpack(KEYS))
"""
)

PRUNE = Script(
    _COMMON
    + _GUARDED
    + r"""
-- ARGV: 1 how many of each namespace's newest checkpoints to keep.
local keep = tonumber(ARGV[1])
local members = redis.call('ZRANGE', CP, 0, -1)
local doomed, current, run = {}, nil, {}
local function flush()
  for i = 1, #run - keep do doomed[#doomed + 1] = run[i] end
end
for _, member in ipairs(members) do
  local ns = string.sub(member, 1, string.find(member, '\0', 1, true) - 1)
  if ns ~= current then
    flush()
    current, run = ns, {}
  end
  run[#run + 1] = member
end
flush()
return drop_all(doomed)
"""
)

DELETE_RUNS = Script(
    _COMMON
    + _GUARDED
    + r"""
-- ARGV: the run ids whose checkpoints to delete.
local doomed = {}
for _, run in ipairs(ARGV) do
  local found = redis.call('ZRANGE', RUN, '(' .. run .. '\0', '(' .. run .. '\1', 'BYLEX')
  for _, entry in ipairs(found) do doomed[#doomed + 1] = string.sub(entry, #run + 2) end
end
return drop_all(doomed)
"""
)

COPY_OUT = Script(
    r"""
-- Every key's content: members of the sorted sets, field/value pairs of the hashes.
local reply = {}
for i = 1, 8 do
  if i == 4 or i == 5 or i == 6 or i == 8 then
    reply[i] = redis.call('HGETALL', KEYS[i])
  else
    reply[i] = redis.call('ZRANGE', KEYS[i], 0, -1)
  end
end
return reply
"""
)

COPY_IN = Script(
    _COMMON
    + _GUARDED
    + r"""
-- ARGV: 1 TTL in ms ('' = none), 2..9 how many arguments each key takes, then those
-- arguments in key order (as COPY_OUT returned them). Refuses a thread with checkpoints.
if redis.call('EXISTS', REC) == 1 then return 0 end
local at = 10
for i = 1, 8 do
  local n = tonumber(ARGV[i + 1])
  local step = (i == 4 or i == 5 or i == 6 or i == 8) and 2 or 1
  local batch = CHUNK * step
  for first = at, at + n - 1, batch do
    local last = math.min(first + batch - 1, at + n - 1)
    if step == 2 then
      redis.call('HSET', KEYS[i], unpack(ARGV, first, last))
    else
      local args = {}
      for j = first, last do
        args[#args + 1] = 0
        args[#args + 1] = ARGV[j]
      end
      redis.call('ZADD', KEYS[i], unpack(args))
    end
  end
  at = at + n
end
if ARGV[1] ~= '' then expire(tonumber(ARGV[1])) end
return 1
"""
)
