"""The Lua scripts: every state change of the queue is one atomic step.

No name is spelt here. The record states (`states.RunState`) and outcomes come as ARGV;
so does the key layout of the scripts that reach keys beyond their KEYS: `Keys.templates`
as JSON in ARGV[1] (`layout`), where `string.format(layout.queued, lane)` is a lane's queue.
"""

from __future__ import annotations

# KEYS: seq, queued(lane), run(id), order(value) or "", lanes
# ARGV: run_id, lane, priority, order_value, tags_json, now, QUEUED, FINISHED
ENQUEUE = """
local queued, finished = ARGV[7], ARGV[8]
if redis.call('EXISTS', KEYS[3]) == 1 then
  local state = redis.call('HGET', KEYS[3], 'state')
  if state ~= finished then return 0 end
end
local seq = redis.call('INCR', KEYS[1])
local score = -tonumber(ARGV[3]) * 1e12 + seq
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'run_id', ARGV[1], 'lane', ARGV[2], 'priority', ARGV[3],
  'order', ARGV[4], 'tags', ARGV[5], 'state', queued, 'queued_at', ARGV[6],
  'seq', seq, 'score', score, 'attempts', 0)
redis.call('PERSIST', KEYS[3])
redis.call('ZADD', KEYS[2], score, ARGV[1])
if KEYS[4] ~= '' then redis.call('RPUSH', KEYS[4], ARGV[1]) end
redis.call('SADD', KEYS[5], ARGV[2])
return 1
"""

# KEYS: active, paused, lanes-set
# ARGV: layout_json, worker_id, now, lease_ms, max_concurrent, lanes_json (allowed lanes,
#       [] = all), lane_limits_json, tag_limits_json, scan, mode, CLAIMED
CLAIM = """
local layout = cjson.decode(ARGV[1])
local max_concurrent = tonumber(ARGV[5])
if max_concurrent >= 0 and redis.call('SCARD', KEYS[1]) >= max_concurrent then
  return nil
end
local allowed = cjson.decode(ARGV[6])
if #allowed == 0 then allowed = redis.call('SMEMBERS', KEYS[3]) end
local lane_limits = cjson.decode(ARGV[7])
local tag_limits = cjson.decode(ARGV[8])
local scan = tonumber(ARGV[9])
local claimed = ARGV[11]

local candidates = {}
for _, lane in ipairs(allowed) do
  if redis.call('SISMEMBER', KEYS[2], lane) == 0 then
    local limit = lane_limits[lane]
    local busy = redis.call('SCARD', string.format(layout.lane_active, lane))
    if limit == nil or limit < 0 or busy < limit then
      local queue = string.format(layout.queued, lane)
      local ids = redis.call('ZRANGE', queue, 0, scan - 1, 'WITHSCORES')
      for i = 1, #ids, 2 do
        table.insert(candidates, {ids[i], tonumber(ids[i + 1]), lane})
      end
    end
  end
end
table.sort(candidates, function(a, b) return a[2] < b[2] end)

local active_tags = nil
local function load_active_tags()
  active_tags = {}
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    local raw = redis.call('HGET', string.format(layout.run, id), 'tags')
    if raw then table.insert(active_tags, cjson.decode(raw)) end
  end
end

local function within_tag_limits(tags)
  if #tag_limits == 0 then return true end
  if active_tags == nil then load_active_tags() end
  for _, rule in ipairs(tag_limits) do
    local mine = tags[rule.key]
    if mine ~= nil and (rule.value == nil or rule.per_unique or rule.value == mine) then
      local count = 0
      for _, other in ipairs(active_tags) do
        local theirs = other[rule.key]
        if theirs ~= nil then
          if rule.per_unique then
            if theirs == mine then count = count + 1 end
          elseif rule.value == nil or theirs == rule.value then
            count = count + 1
          end
        end
      end
      if count >= rule.limit then return false end
    end
  end
  return true
end

for _, c in ipairs(candidates) do
  local id, lane = c[1], c[3]
  local key = string.format(layout.run, id)
  local order = redis.call('HGET', key, 'order')
  local head_ok = true
  if order and order ~= '' then
    head_ok = redis.call('LINDEX', string.format(layout.order, order), 0) == id
  end
  if head_ok then
    local tags = cjson.decode(redis.call('HGET', key, 'tags') or '{}')
    if within_tag_limits(tags) then
      redis.call('ZREM', string.format(layout.queued, lane), id)
      redis.call('SADD', KEYS[1], id)
      redis.call('SADD', string.format(layout.lane_active, lane), id)
      redis.call('HSET', key, 'state', claimed, 'worker', ARGV[2], 'claimed_at', ARGV[3],
        'mode', ARGV[10])
      redis.call('HINCRBY', key, 'attempts', 1)
      redis.call('SET', string.format(layout.lease, id), ARGV[2], 'PX', tonumber(ARGV[4]))
      return id
    end
  end
end
return nil
"""

# KEYS: run(id), active, lease(id)
# ARGV: layout_json, run_id, now, outcome, retention_s, FINISHED
RELEASE = """
local layout = cjson.decode(ARGV[1])
local finished = ARGV[6]
local lane = redis.call('HGET', KEYS[1], 'lane')
local order = redis.call('HGET', KEYS[1], 'order')
redis.call('SREM', KEYS[2], ARGV[2])
if lane then
  redis.call('SREM', string.format(layout.lane_active, lane), ARGV[2])
  redis.call('ZREM', string.format(layout.queued, lane), ARGV[2])
end
if order and order ~= '' then
  redis.call('LREM', string.format(layout.order, order), 0, ARGV[2])
end
redis.call('DEL', KEYS[3])
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'state', finished, 'finished_at', ARGV[3], 'outcome', ARGV[4])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
end
return 1
"""

# Put a claimed run back in line, at its old place (its score is kept).
# KEYS: run(id), active, lease(id)
# ARGV: layout_json, run_id, now, reason, QUEUED
REQUEUE = """
local layout = cjson.decode(ARGV[1])
local queued = ARGV[5]
local lane = redis.call('HGET', KEYS[1], 'lane')
local score = redis.call('HGET', KEYS[1], 'score')
if not lane or not score then return 0 end
redis.call('SREM', KEYS[2], ARGV[2])
redis.call('SREM', string.format(layout.lane_active, lane), ARGV[2])
redis.call('DEL', KEYS[3])
redis.call('ZADD', string.format(layout.queued, lane), tonumber(score), ARGV[2])
redis.call('HSET', KEYS[1], 'state', queued, 'requeued_at', ARGV[3], 'requeue_reason', ARGV[4])
redis.call('HDEL', KEYS[1], 'worker')
return 1
"""

# Renew a lease only if this worker still holds it.
# KEYS: lease(id)   ARGV: worker_id, lease_ms
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
end
return 0
"""

# Take over an expired lease (recovery), only if nobody holds it.
# KEYS: lease(id), run(id)   ARGV: worker_id, lease_ms, now
ADOPT = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', tonumber(ARGV[2])) then
  redis.call('HSET', KEYS[2], 'worker', ARGV[1], 'adopted_at', ARGV[3])
  return 1
end
return 0
"""

# Take a run out of line if it is still waiting (cancel). Returns 0 if a worker has it.
# KEYS: run(id)   ARGV: layout_json, run_id, now, retention_s, QUEUED, FINISHED, CANCELED
REMOVE_QUEUED = """
local layout = cjson.decode(ARGV[1])
local queued, finished, canceled = ARGV[5], ARGV[6], ARGV[7]
if redis.call('HGET', KEYS[1], 'state') ~= queued then return 0 end
local lane = redis.call('HGET', KEYS[1], 'lane')
local order = redis.call('HGET', KEYS[1], 'order')
redis.call('ZREM', string.format(layout.queued, lane), ARGV[2])
if order and order ~= '' then
  redis.call('LREM', string.format(layout.order, order), 0, ARGV[2])
end
redis.call('HSET', KEYS[1], 'state', finished, 'finished_at', ARGV[3], 'outcome', canceled)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return 1
"""
