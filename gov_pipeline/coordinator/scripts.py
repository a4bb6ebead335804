"""The Lua scripts: every state change of the queue is one atomic step.

No name is spelt here: the record states (`states.RunState`) and outcomes come as ARGV, the
keys as KEYS, each one named by the caller (queue.py, from keys.py) — a script touches no
key it was not given, and all of them share the queue's hash tag, so the scripts run on a
Redis Cluster as they do on one server. Lease times come from the server's clock (`TIME`),
the same for every worker host. Each script's first comment lists its KEYS and ARGV.
"""

from __future__ import annotations

# Milliseconds since the epoch, by the Redis server's clock.
_NOW_MS = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# Make the ordering line's head the first run of its list (or none when it is empty):
# reset_head(the heads hash, the line's list, its ordering value), both keys from KEYS.
_RESET_HEAD = """
local function reset_head(heads_key, line_key, value)
  local first = redis.call('LINDEX', line_key, 0)
  if first then redis.call('HSET', heads_key, value, first)
  else redis.call('HDEL', heads_key, value) end
end
"""

# Take a run out of everything that holds it: slot, lease, line, ordering line.
# KEYS: as RELEASE and REMOVE_QUEUED below (the same layout); ARGV[1] the run id.
_FORGET = (
    _RESET_HEAD
    + """
local function forget(id, member, value)
  redis.call('SREM', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
  redis.call('ZREM', KEYS[4], id)
  redis.call('HDEL', KEYS[5], id)
  redis.call('SREM', KEYS[6], id)
  if KEYS[8] then
    redis.call('SREM', KEYS[8], id)
    redis.call('ZREM', KEYS[9], member)
  end
  if KEYS[10] then
    redis.call('LREM', KEYS[10], 0, id)
    reset_head(KEYS[7], KEYS[10], value)
  end
end
"""
)

# KEYS: seq, queued(lane), run(id), lanes, meta, heads, pooled, [order(value)]
# ARGV: run_id, lane, priority, priority_key, order_value, tags_json, now, meta_json,
#       pooled ("1" or ""), QUEUED, FINISHED
ENQUEUE = (
    _RESET_HEAD
    + """
local id, queued, finished = ARGV[1], ARGV[10], ARGV[11]
if redis.call('EXISTS', KEYS[3]) == 1 then
  if redis.call('HGET', KEYS[3], 'state') ~= finished then return 0 end
end
local seq = redis.call('INCR', KEYS[1])
local member = ARGV[4] .. string.format('%016d', seq) .. '|' .. id
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'run_id', id, 'lane', ARGV[2], 'priority', ARGV[3],
  'order', ARGV[5], 'tags', ARGV[6], 'state', queued, 'queued_at', ARGV[7],
  'seq', seq, 'member', member, 'attempts', 0)
redis.call('PERSIST', KEYS[3])
local meta = cjson.decode(ARGV[8])
meta.member = member
redis.call('HSET', KEYS[5], id, cjson.encode(meta))
if ARGV[9] ~= '' then redis.call('SADD', KEYS[7], id) end
redis.call('ZADD', KEYS[2], 0, member)
if KEYS[8] then
  redis.call('RPUSH', KEYS[8], id)
  reset_head(KEYS[6], KEYS[8], ARGV[5])
end
redis.call('SADD', KEYS[4], ARGV[2])
return 1
"""
)

# Returns {run id, lease token} or nil. The token (`worker_id#n`, n from the fence counter,
# never reused) is what the holders hash keeps: every later step of the holder names it, so
# a worker that lost its lease (cut off past its expiry, adopted meanwhile) is refused
# even if the run is held again, by itself or by another.
# KEYS: active, paused, meta, outside, heads, leases, holders, fence, then per lane of
#       ARGV[5] in its order: queued(lane), lane_active(lane)
# ARGV: worker_id, lease_ms, max_concurrent, lanes_json, lane_limits_json, tag_limits_json,
#       scan, blocked_json (runs the pool check holds back), now_s
CLAIM = (
    _NOW_MS
    + """
local max_concurrent = tonumber(ARGV[3])
local outside = {}
for _, raw in ipairs(redis.call('HVALS', KEYS[4])) do table.insert(outside, cjson.decode(raw)) end
if max_concurrent >= 0 and redis.call('SCARD', KEYS[1]) + #outside >= max_concurrent then
  return nil
end
local lanes = cjson.decode(ARGV[4])
local lane_limits = cjson.decode(ARGV[5])
local tag_limits = cjson.decode(ARGV[6])
local scan = tonumber(ARGV[7])
local blocked = {}
for _, id in ipairs(cjson.decode(ARGV[8])) do blocked[id] = true end
local now_s = tonumber(ARGV[9])
local outside_in_lane = {}
for _, o in ipairs(outside) do outside_in_lane[o.lane] = (outside_in_lane[o.lane] or 0) + 1 end

local candidates = {}
for i, lane in ipairs(lanes) do
  if redis.call('SISMEMBER', KEYS[2], lane) == 0 then
    local limit = lane_limits[lane]
    local busy = redis.call('SCARD', KEYS[8 + 2 * i]) + (outside_in_lane[lane] or 0)
    if limit == nil or limit < 0 or busy < limit then
      for _, member in ipairs(redis.call('ZRANGE', KEYS[7 + 2 * i], 0, scan - 1)) do
        table.insert(candidates, {member, i})
      end
    end
  end
end
table.sort(candidates, function(a, b) return a[1] < b[1] end)

-- The tags of every run in progress: holding a slot here, or outside (run storage's).
local held = nil
local function load_held()
  held = {}
  local ids = redis.call('SMEMBERS', KEYS[1])
  for first = 1, #ids, 500 do
    local last = math.min(first + 499, #ids)
    for _, raw in ipairs(redis.call('HMGET', KEYS[3], unpack(ids, first, last))) do
      if raw then table.insert(held, cjson.decode(raw).tags or {}) end
    end
  end
  for _, o in ipairs(outside) do table.insert(held, o.tags or {}) end
end

-- Dagster's tag limits: a key (runs carrying it), a key and value, or a key per value.
local function within_tag_limits(tags)
  if #tag_limits == 0 then return true end
  if held == nil then load_held() end
  for _, rule in ipairs(tag_limits) do
    local mine = tags[rule.key]
    local any_value = rule.value == nil and not rule.per_unique
    if rule.limit >= 0 and mine ~= nil and (rule.value == nil or rule.value == mine) then
      local count = 0
      for _, other in ipairs(held) do
        local theirs = other[rule.key]
        if theirs ~= nil and (any_value or theirs == mine) then count = count + 1 end
      end
      if count >= rule.limit then return false end
    end
  end
  return true
end

for _, c in ipairs(candidates) do
  local member, i = c[1], c[2]
  local id = string.match(member, '|(.*)$')
  if id and not blocked[id] then
    local raw = redis.call('HGET', KEYS[3], id)
    local meta = raw and cjson.decode(raw) or {}
    local ok = not (meta.not_before and tonumber(meta.not_before) > now_s)
    if ok and meta.order and meta.order ~= '' then
      ok = redis.call('HGET', KEYS[5], meta.order) == id
    end
    if ok and within_tag_limits(meta.tags or {}) then
      redis.call('ZREM', KEYS[7 + 2 * i], member)
      redis.call('SADD', KEYS[1], id)
      redis.call('SADD', KEYS[8 + 2 * i], id)
      redis.call('ZADD', KEYS[6], now_ms() + tonumber(ARGV[2]), id)
      local token = ARGV[1] .. '#' .. redis.call('INCR', KEYS[8])
      redis.call('HSET', KEYS[7], id, token)
      return {id, token}
    end
  end
end
return nil
"""
)

# The claimed run's record takes its worker (only if that lease token still holds the lease
# and nothing canceled the run in between).
# KEYS: run(id), holders   ARGV: run_id, token, now, mode, QUEUED, CLAIMED, worker_id
TAKE = """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
if redis.call('HGET', KEYS[1], 'state') ~= ARGV[5] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[6], 'worker', ARGV[7], 'claimed_at', ARGV[3],
  'mode', ARGV[4], 'token', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return 1
"""

# The worker is about to launch the run: from here on a cancel terminates it.
# KEYS: run(id), holders   ARGV: run_id, token, now, host, CLAIMED, STARTED
START = """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
if redis.call('HGET', KEYS[1], 'state') ~= ARGV[5] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[6], 'started_at', ARGV[3], 'host', ARGV[4])
return 1
"""

# Refused (0) when a token is given and it no longer holds the run: a late holder frees
# nobody's slot. Without one (a run found ended, or its lease expired) it always releases.
# A holder whose run was released for it (found ended) is told it is done (1).
# KEYS: run(id), active, meta, leases, holders, pooled, heads,
#       [lane_active(lane), queued(lane), [order(value)]]
# ARGV: run_id, now, outcome, retention_s, member, order_value, FINISHED, token ("" for none)
RELEASE = (
    _FORGET
    + """
local holder = redis.call('HGET', KEYS[5], ARGV[1])
if ARGV[8] ~= '' and holder ~= ARGV[8] then
  -- Released already while this token still held it (a reconciliation saw the run end
  -- first): done, not refused. Adopted since, the record names the adopter's token.
  if not holder and redis.call('HGET', KEYS[1], 'state') == ARGV[7]
     and redis.call('HGET', KEYS[1], 'token') == ARGV[8] then return 1 end
  return 0
end
forget(ARGV[1], ARGV[5], ARGV[6])
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'state', ARGV[7], 'finished_at', ARGV[2], 'outcome', ARGV[3])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
end
return 1
"""
)

# Take a run out of line if no worker has started it (cancel). Returns 0 if one has.
# KEYS: as RELEASE
# ARGV: run_id, now, retention_s, member, order_value, QUEUED, CLAIMED, FINISHED, CANCELED
REMOVE_QUEUED = (
    _FORGET
    + """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= ARGV[6] and state ~= ARGV[7] then return 0 end
forget(ARGV[1], ARGV[4], ARGV[5])
redis.call('HSET', KEYS[1], 'state', ARGV[8], 'finished_at', ARGV[2], 'outcome', ARGV[9])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""
)

# Put a held run back in line, at its old place (its member is kept); optionally not to be
# claimed before `not_before` (seconds since the epoch). Refused (0) when a token is given
# and it no longer holds the run.
# KEYS: run(id), active, meta, leases, holders, lane_active(lane), queued(lane)
# ARGV: run_id, now, reason, member, not_before ("" for none), QUEUED, token ("" for none)
REQUEUE = """
local raw = redis.call('HGET', KEYS[3], ARGV[1])
if not raw then return 0 end
if ARGV[7] ~= '' and redis.call('HGET', KEYS[5], ARGV[1]) ~= ARGV[7] then return 0 end
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[6], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
if ARGV[5] ~= '' then
  local meta = cjson.decode(raw)
  meta.not_before = tonumber(ARGV[5])
  redis.call('HSET', KEYS[3], ARGV[1], cjson.encode(meta))
end
redis.call('ZADD', KEYS[7], 0, ARGV[4])
redis.call('HSET', KEYS[1], 'state', ARGV[6], 'requeued_at', ARGV[2], 'requeue_reason', ARGV[3])
redis.call('HDEL', KEYS[1], 'worker', 'token')
return 1
"""

# Renew a lease only if this token still holds it; a run released for its holder (found
# ended: see RELEASE) needs no lease, and is not refused either.
# KEYS: leases, holders, run(id)   ARGV: run_id, token, lease_ms, FINISHED
RENEW = (
    _NOW_MS
    + """
local holder = redis.call('HGET', KEYS[2], ARGV[1])
if holder ~= ARGV[2] then
  if not holder and redis.call('HGET', KEYS[3], 'state') == ARGV[4]
     and redis.call('HGET', KEYS[3], 'token') == ARGV[2] then return 1 end
  return 0
end
redis.call('ZADD', KEYS[1], now_ms() + tonumber(ARGV[3]), ARGV[1])
return 1
"""
)

# The token holding a lease that has not expired, or nil.
# KEYS: leases, holders   ARGV: run_id
HOLDER = (
    _NOW_MS
    + """
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expiry or tonumber(expiry) <= now_ms() then return nil end
return redis.call('HGET', KEYS[2], ARGV[1])
"""
)

# A run's own heartbeat: its liveness key for ARGV[2] ms, and, while its record exists
# (the run is in the queue), the record remembers that it beats.
# KEYS: run_beat(id), run(id)   ARGV: where ("host pid"), ttl_ms
BEAT = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HSET', KEYS[2], 'beats', ARGV[1]) end
return 1
"""

# Take over a lease that expired (recovery), only if nobody holds it: a new token, so the
# old holder's steps are refused from now on. Returns the token, or nil.
# KEYS: leases, holders, run(id), fence   ARGV: run_id, worker_id, lease_ms, now
ADOPT = (
    _NOW_MS
    + """
local now = now_ms()
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if expiry and tonumber(expiry) > now then return nil end
local token = ARGV[2] .. '#' .. redis.call('INCR', KEYS[4])
-- The worker that lost the run first, kept through adoptions a rescuer gave up.
local was = redis.call('HGET', KEYS[3], 'worker')
if was and redis.call('HEXISTS', KEYS[3], 'lost_by') == 0 then
  redis.call('HSET', KEYS[3], 'lost_by', was)
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], token)
redis.call('HSET', KEYS[3], 'worker', ARGV[2], 'adopted_at', ARGV[4], 'token', token)
return token
"""
)

# Replace the runs counted as in progress outside the queue: those of run storage's list
# (ARGV[1], JSON [[run_id, meta_json], ...]) that hold no slot here.
# KEYS: active, outside   ARGV: runs_json
SYNC_OUTSIDE = """
redis.call('DEL', KEYS[2])
for _, pair in ipairs(cjson.decode(ARGV[1])) do
  if redis.call('SISMEMBER', KEYS[1], pair[1]) == 0 then
    redis.call('HSET', KEYS[2], pair[1], pair[2])
  end
end
return redis.call('HLEN', KEYS[2])
"""
