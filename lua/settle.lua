-- settle.lua — an operator settles an undetermined order: "confirm" (the sink
-- has it) or "release" (it does not: the units go back to stock and user).
--
-- KEYS[1]  seckill:{S}:order:{O}          order hash
-- KEYS[2]  seckill:{S}:sale               sale hash
-- KEYS[3]  seckill:{S}:units              hash user -> units held
-- KEYS[4]  seckill:{S}:undetermined       sorted set of undetermined order ids
-- KEYS[5]  seckill:{S}:pay_deadlines      sorted set order id -> pay deadline (ms)
--
-- ARGV[1]  "confirm" or "release" (the caller has checked it)
-- ARGV[2]  now in ms, or "" to use Redis TIME
-- ARGV[3]  retention of a final order hash, seconds ("" or 0 = kept forever)
-- ARGV[4]  order id
--
-- Returns {code, field1, value1, ...}: the order hash after the call.
--   {0 NOT_FOUND}
--   {1 SETTLED, ...}                 was undetermined, now confirmed or failed
--   {2 NOT_UNDETERMINED, ...}        any other status: nothing changed
--
-- A confirm in a sale with a pay window (pay_window_s) starts the order's
-- window now, as confirm.lua does.

local o = redis.call('HMGET', KEYS[1], 'status', 'user_id', 'quantity')
if not o[1] then
  return {0}
end
local code = 2
if o[1] == 'undetermined' then
  local now
  if ARGV[2] ~= "" then
    now = tonumber(ARGV[2])
  else
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  redis.call('HINCRBY', KEYS[2], 'n_undetermined', -1)
  if ARGV[1] == 'confirm' then
    redis.call('HSET', KEYS[1], 'status', 'confirmed', 'confirmed_at', now, 'settled_at', now)
    redis.call('HINCRBY', KEYS[2], 'n_confirmed', 1)
    local window = tonumber(redis.call('HGET', KEYS[2], 'pay_window_s'))
    if window and window > 0 then
      redis.call('HSET', KEYS[1], 'pay_deadline', now + window * 1000)
      redis.call('ZADD', KEYS[5], now + window * 1000, ARGV[4])
    end
  else
    local qty = tonumber(o[3])
    redis.call('HSET', KEYS[1], 'status', 'failed', 'settled_at', now)
    redis.call('HINCRBY', KEYS[2], 'n_failed', 1)
    redis.call('HINCRBY', KEYS[2], 'stock_left', qty)
    if redis.call('HINCRBY', KEYS[3], o[2], -qty) <= 0 then
      redis.call('HDEL', KEYS[3], o[2])
    end
  end
  redis.call('ZREM', KEYS[4], ARGV[4])
  local retention = tonumber(ARGV[3]) or 0
  if retention > 0 and redis.call('HEXISTS', KEYS[1], 'pay_deadline') == 0 then
    redis.call('EXPIRE', KEYS[1], retention)
  end
  code = 1
end
local out = {code}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all do
  out[#out + 1] = all[i]
end
return out
