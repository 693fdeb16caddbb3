"""Lua scripts of the Redis Streams queue; each state change is one script (see ``redis_streams``).

Every script is ``PRELUDE`` + its body: ``ARGV[1]`` is the key prefix; time comes from ``TIME``.
"""

LUA_PRELUDE = """
local P = ARGV[1]
local GROUP = 'workers'
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function qk(queue, suffix) return P .. 'q{' .. queue .. '}' .. suffix end
local function jk(id) return P .. 'job:' .. id end
local function move(key, queue, id, old, new, now)
  local seq = redis.call('HGET', key, 'seq')
  redis.call('ZREM', qk(queue, 'st:' .. old), id)
  redis.call('ZADD', qk(queue, 'st:' .. new), seq, id)
  redis.call('HSET', key, 'state', new, 'updated_at', now)
end
local function drop_entry(key)
  local f = redis.call('HMGET', key, 'stream', 'entry')
  if f[1] and f[2] and f[2] ~= '' then
    redis.call('XACK', f[1], GROUP, f[2])
    redis.call('XDEL', f[1], f[2])
  end
  redis.call('HSET', key, 'entry', '')
end
local function add_entry(key, queue, id)
  local priority = redis.call('HGET', key, 'priority')
  local stream = qk(queue, 's:' .. priority)
  if redis.call('EXISTS', stream) == 0 then
    redis.call('XGROUP', 'CREATE', stream, GROUP, '0', 'MKSTREAM')
  end
  redis.call('ZADD', qk(queue, 'bands'), priority, priority)
  local entry = redis.call('XADD', stream, '*', 'job', id)
  redis.call('HSET', key, 'stream', stream, 'entry', entry)
  redis.call('XADD', qk(queue, 'bell'), 'MAXLEN', '1', '*', 'ring', '1')
end
local function finish(key, queue, id, old, new, err, now)
  drop_entry(key)
  move(key, queue, id, old, new, now)
  redis.call('HDEL', key, 'token')
  redis.call('HSET', key, 'finished_at', now)
  if err then redis.call('HSET', key, 'error', err) end
  redis.call('ZREM', qk(queue, 'delayed'), id)
  redis.call('ZREM', qk(queue, 'deadlines'), id)
end
-- The caller's token must match and the job must be running: returns the fields, or an answer to send back.
local function owned(key, token)
  local f = redis.call('HMGET', key, 'state', 'token', 'queue', 'cancel_requested', 'lease_owner',
                       'stream', 'entry', 'attempts', 'max_attempts', 'deadline')
  if not f[1] then return nil, {'missing'} end
  if f[1] ~= 'running' or f[2] ~= token then return nil, {'lost', f[1], f[5] or ''} end
  return f, nil
end
"""

LUA_ENQUEUE = """
local queue, id, payload, priority, idem = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local max_attempts, deadline, limit = ARGV[7], ARGV[8], tonumber(ARGV[9])
if idem ~= '' then
  local existing = redis.call('HGET', qk(queue, 'idem'), idem)
  if existing and redis.call('EXISTS', jk(existing)) == 1 then
    return {'dup', redis.call('HGETALL', jk(existing))}
  end
end
local active = redis.call('ZCARD', qk(queue, 'st:queued')) + redis.call('ZCARD', qk(queue, 'st:running'))
if active >= limit then return {'full', active} end
local now = now_ms()
local seq = redis.call('INCR', P .. 'seq')
local key = jk(id)
redis.call('HSET', key, 'id', id, 'queue', queue, 'state', 'queued', 'payload', payload, 'priority', priority,
           'attempts', 0, 'max_attempts', max_attempts, 'cancel_requested', 0, 'created_at', now,
           'updated_at', now, 'seq', seq)
redis.call('ZADD', qk(queue, 'st:queued'), seq, id)
redis.call('ZADD', qk(queue, 'all'), seq, id)
redis.call('SADD', P .. 'queues', queue)
if idem ~= '' then
  redis.call('HSET', key, 'idempotency_key', idem)
  redis.call('HSET', qk(queue, 'idem'), idem, id)
end
if deadline ~= '' then
  redis.call('HSET', key, 'deadline', deadline)
  redis.call('ZADD', qk(queue, 'deadlines'), deadline, id)
end
add_entry(key, queue, id)
return {'ok', redis.call('HGETALL', key)}
"""

LUA_TAKE = """
local queue, worker = ARGV[2], ARGV[3]
local n, lease_ms, min_idle = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local now = now_ms()
for _, id in ipairs(redis.call('ZRANGEBYSCORE', qk(queue, 'delayed'), '-inf', now, 'LIMIT', 0, 100)) do
  redis.call('ZREM', qk(queue, 'delayed'), id)
  local f = redis.call('HMGET', jk(id), 'state', 'entry')
  if f[1] == 'queued' and (not f[2] or f[2] == '') then add_entry(jk(id), queue, id) end
end
local expired = redis.call('ZRANGEBYSCORE', qk(queue, 'deadlines'), '-inf', '(' .. now, 'LIMIT', 0, 100)
for _, id in ipairs(expired) do
  redis.call('ZREM', qk(queue, 'deadlines'), id)
  if redis.call('HGET', jk(id), 'state') == 'queued' then
    finish(jk(id), queue, id, 'queued', 'failed', 'deadline exceeded', now)
  end
end
local out = {}
-- Hand the job behind a delivered (or reclaimed) entry to this worker, or settle it.
local function deliver(stream, entry, fields)
  local id = nil
  if type(fields) == 'table' then
    for i = 1, #fields, 2 do if fields[i] == 'job' then id = fields[i + 1] end end
  end
  local key = id and jk(id)
  local f = key and redis.call('HMGET', key, 'state', 'entry', 'cancel_requested', 'deadline', 'attempts',
                                'max_attempts', 'lease_expires_at', 'lease_owner')
  if not f or not f[1] or f[2] ~= entry then
    redis.call('XACK', stream, GROUP, entry)
    redis.call('XDEL', stream, entry)
    return
  end
  local state = f[1]
  if state == 'running' then
    if tonumber(f[7] or '0') > now then
      redis.call('XCLAIM', stream, GROUP, f[8] or worker, 0, entry, 'JUSTID')
      return
    end
  elseif state ~= 'queued' then
    drop_entry(key)
    return
  end
  local final, err = nil, nil
  if f[3] == '1' then
    final, err = 'cancelled', 'cancelled'
  elseif f[4] and tonumber(f[4]) < now then
    final, err = 'failed', 'deadline exceeded'
  elseif tonumber(f[5]) >= tonumber(f[6]) then
    final = 'dead'
    err = 'lease expired after ' .. f[5] .. ' deliveries (last worker: ' .. (f[8] or 'none') .. ')'
  end
  if final then
    finish(key, queue, id, state, final, err, now)
    return
  end
  if state == 'queued' then move(key, queue, id, 'queued', 'running', now) end
  redis.call('HINCRBY', key, 'attempts', 1)
  redis.call('HSET', key, 'token', ARGV[7 + #out], 'lease_owner', worker, 'lease_expires_at', now + lease_ms,
             'updated_at', now)
  out[#out + 1] = redis.call('HGETALL', key)
end
for _, band in ipairs(redis.call('ZREVRANGE', qk(queue, 'bands'), 0, -1)) do
  if #out >= n then break end
  local stream = qk(queue, 's:' .. band)
  local cursor = '0-0'
  for _ = 1, 10 do
    if #out >= n then break end
    local res = redis.call('XAUTOCLAIM', stream, GROUP, worker, min_idle, cursor, 'COUNT', n - #out)
    for _, e in ipairs(res[2]) do
      if type(e) == 'table' then deliver(stream, e[1], e[2]) end
    end
    cursor = res[1]
    if cursor == '0-0' then break end
  end
  while #out < n do
    local res = redis.call('XREADGROUP', 'GROUP', GROUP, worker, 'COUNT', n - #out, 'STREAMS', stream, '>')
    if not res or #res[1][2] == 0 then break end
    for _, e in ipairs(res[1][2]) do deliver(stream, e[1], e[2]) end
  end
end
local bell = redis.call('XREVRANGE', qk(queue, 'bell'), '+', '-', 'COUNT', 1)
local last = '0-0'
if #bell > 0 then last = bell[1][1] end
return {last, out}
"""

LUA_HEARTBEAT = """
local id, key, now = ARGV[2], jk(ARGV[2]), now_ms()
local f, answer = owned(key, ARGV[3])
if not f then return answer end
if f[4] == '1' then
  finish(key, f[3], id, 'running', 'cancelled', 'cancelled', now)
  return {'cancelled'}
end
redis.call('XCLAIM', f[6], GROUP, f[5], 0, f[7], 'JUSTID')
redis.call('HSET', key, 'lease_expires_at', now + tonumber(ARGV[4]), 'updated_at', now)
return {'ok', redis.call('HGETALL', key)}
"""

LUA_COMPLETE = """
local id, key, now = ARGV[2], jk(ARGV[2]), now_ms()
local f, answer = owned(key, ARGV[3])
if not f then return answer end
finish(key, f[3], id, 'running', 'succeeded', nil, now)
redis.call('HDEL', key, 'error', 'result')
if ARGV[4] ~= '' then redis.call('HSET', key, 'result', ARGV[4]) end
return {'ok', redis.call('HGETALL', key)}
"""

LUA_FAIL = """
local id, key, now = ARGV[2], jk(ARGV[2]), now_ms()
local err, retry, delay = ARGV[4], ARGV[5] == '1', tonumber(ARGV[6])
local f, answer = owned(key, ARGV[3])
if not f then return answer end
local queue = f[3]
if f[4] == '1' then
  finish(key, queue, id, 'running', 'cancelled', err, now)
elseif retry and tonumber(f[8]) < tonumber(f[9]) then
  drop_entry(key)
  move(key, queue, id, 'running', 'queued', now)
  redis.call('HDEL', key, 'token', 'lease_owner', 'lease_expires_at')
  redis.call('HSET', key, 'error', err)
  if f[10] then redis.call('ZADD', qk(queue, 'deadlines'), f[10], id) end
  if delay > 0 then
    redis.call('ZADD', qk(queue, 'delayed'), now + delay, id)
  else
    add_entry(key, queue, id)
  end
else
  local final = 'failed'
  if retry then final = 'dead' end
  finish(key, queue, id, 'running', final, err, now)
end
return {'ok', redis.call('HGETALL', key)}
"""

LUA_CANCEL = """
local id, key, now = ARGV[2], jk(ARGV[2]), now_ms()
local f = redis.call('HMGET', key, 'state', 'queue')
if not f[1] then return {'missing'} end
if f[1] == 'queued' then
  finish(key, f[2], id, 'queued', 'cancelled', 'cancelled', now)
  redis.call('HSET', key, 'cancel_requested', 1)
elseif f[1] == 'running' then
  redis.call('HSET', key, 'cancel_requested', 1, 'updated_at', now)
end
return {'ok', redis.call('HGETALL', key)}
"""

LUA_REQUEUE = """
local id, key, now = ARGV[2], jk(ARGV[2]), now_ms()
local f = redis.call('HMGET', key, 'state', 'queue', 'deadline')
if not f[1] then return {'missing'} end
if f[1] ~= 'dead' and f[1] ~= 'failed' and f[1] ~= 'cancelled' then return {'state', f[1]} end
move(key, f[2], id, f[1], 'queued', now)
redis.call('HDEL', key, 'token', 'lease_owner', 'lease_expires_at', 'error', 'result', 'finished_at')
redis.call('HSET', key, 'attempts', 0, 'cancel_requested', 0)
if f[3] then redis.call('ZADD', qk(f[2], 'deadlines'), f[3], id) end
add_entry(key, f[2], id)
return {'ok', redis.call('HGETALL', key)}
"""
