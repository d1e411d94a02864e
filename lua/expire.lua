-- expire.lua — an unpaid order past its pay deadline: confirmed -> expired,
-- its units back to the sale (this bucket's stock, for a sale with buckets)
-- and to the user, who may buy again (issue 15). A compare-and-set on the
-- status: an expiry racing paid.lua has exactly one winner.
--
-- KEYS[1]  seckill:{S}:order:{O}          order hash
-- KEYS[2]  seckill:{S}:sale               sale hash
-- KEYS[3]  seckill:{S}:units              hash user -> units held
-- KEYS[4]  seckill:{S}:pay_deadlines      sorted set order id -> deadline (ms)
-- KEYS[5]  seckill:{S}:orders             the sale's stream (the sink's status event)
--
-- ARGV[1]  order id
-- ARGV[2]  now in ms, or "" to use Redis TIME
-- ARGV[3]  retention of a final order hash, seconds ("" or 0 = kept forever)
--
-- Returns 1 when the order went confirmed -> expired; 0 when nothing changed:
-- not due yet (left in KEYS[4]), or not confirmed any more / gone (its
-- deadline entry is removed).

local o = redis.call('HMGET', KEYS[1], 'status', 'pay_deadline', 'user_id', 'quantity',
  'created_at')
if o[1] ~= 'confirmed' or not o[2] then
  redis.call('ZREM', KEYS[4], ARGV[1])
  return 0
end
local now
if ARGV[2] ~= "" then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
if now < tonumber(o[2]) then
  return 0
end
local qty = tonumber(o[4])
redis.call('HSET', KEYS[1], 'status', 'expired', 'expired_at', now)
redis.call('HINCRBY', KEYS[2], 'stock_left', qty)
redis.call('HINCRBY', KEYS[2], 'n_confirmed', -1)
redis.call('HINCRBY', KEYS[2], 'n_expired', 1)
if redis.call('HINCRBY', KEYS[3], o[3], -qty) <= 0 then
  redis.call('HDEL', KEYS[3], o[3])
end
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('XADD', KEYS[5], '*', 'order_id', ARGV[1], 'user_id', o[3],
  'quantity', o[4], 'created_at', o[5], 'status', 'expired', 'at', now)
local retention = tonumber(ARGV[3]) or 0
if retention > 0 then
  redis.call('EXPIRE', KEYS[1], retention)
end
return 1
