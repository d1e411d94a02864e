-- confirm.lua — the sink has the order: mark it confirmed and acknowledge its entry.
--
-- KEYS[1]  seckill:{S}:order:{O}   order hash
-- KEYS[2]  seckill:{S}:sale        sale hash (counters)
-- KEYS[3]  seckill:{S}:orders      the sale's stream
-- KEYS[4]  seckill:{S}:pay_deadlines  sorted set order id -> pay deadline (ms)
--
-- ARGV[1]  consumer group
-- ARGV[2]  stream entry id
-- ARGV[3]  now in ms, or "" to use Redis TIME
-- ARGV[4]  retention of a final order hash, seconds ("" or 0 = kept forever)
--
-- Returns 1 when the order went queued -> confirmed, 0 when it was not queued
-- (already confirmed, failed, cancelled or undetermined: nothing changes but
-- the XACK). Idempotent: a replayed confirm changes nothing twice.
-- The entry is acknowledged and deleted from the stream (nothing reads an
-- acknowledged entry again); the order hash expires after the retention.
-- A sale with a pay window (pay_window_s in its hash, issue 15) gives the
-- confirmed order a deadline: confirmed_at + window, in the order hash
-- (pay_deadline) and in KEYS[4]; its hash then keeps no TTL until it is
-- final (paid.lua / expire.lua give it the retention).

local status = redis.call('HGET', KEYS[1], 'status')
local changed = 0
if status == 'queued' then
  local now
  if ARGV[3] ~= "" then
    now = tonumber(ARGV[3])
  else
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  redis.call('HSET', KEYS[1], 'status', 'confirmed', 'confirmed_at', now)
  redis.call('HINCRBY', KEYS[2], 'n_queued', -1)
  redis.call('HINCRBY', KEYS[2], 'n_confirmed', 1)
  local window = tonumber(redis.call('HGET', KEYS[2], 'pay_window_s'))
  local retention = tonumber(ARGV[4]) or 0
  if window and window > 0 then
    local deadline = now + window * 1000
    redis.call('HSET', KEYS[1], 'pay_deadline', deadline)
    redis.call('ZADD', KEYS[4], deadline, redis.call('HGET', KEYS[1], 'order_id'))
  elseif retention > 0 then
    redis.call('EXPIRE', KEYS[1], retention)
  end
  changed = 1
end
redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[3], ARGV[2])
return changed
