-- cancel.lua — an operator cancels an order: its units go back to stock and
-- to the user, who may buy again.
--
-- KEYS[1]  seckill:{S}:order:{O}   order hash
-- KEYS[2]  seckill:{S}:sale        sale hash
-- KEYS[3]  seckill:{S}:units       hash user -> units held
-- KEYS[4]  seckill:{S}:pay_deadlines  sorted set order id -> pay deadline (ms)
-- KEYS[5]  seckill:{S}:orders      the sale's stream (the sink's status event)
--
-- ARGV[1]  retention of a final order hash, seconds ("" or 0 = kept forever)
-- ARGV[2]  order id
--
-- Returns {code, field1, value1, ...}: the order hash after the call.
--   {0 NOT_FOUND}
--   {1 CANCELLED, ...}           was queued or confirmed, now cancelled
--   {2 NOT_CANCELLABLE, ...}     failed, cancelled or undetermined (settle it
--                                first): nothing changed
--
-- A queued order's stream entry stays where it is; the worker that reads it
-- finds the order cancelled and only acknowledges it (the sink never had it).
-- A confirmed order's cancel reaches the sink: a status event is queued on
-- the stream (issue 15), and its pay deadline (if any) is removed.

local o = redis.call('HMGET', KEYS[1], 'status', 'user_id', 'quantity', 'created_at')
if not o[1] then
  return {0}
end
local code = 2
if o[1] == 'queued' or o[1] == 'confirmed' then
  local qty = tonumber(o[3])
  redis.call('HSET', KEYS[1], 'status', 'cancelled')
  redis.call('HINCRBY', KEYS[2], 'stock_left', qty)
  redis.call('HINCRBY', KEYS[2], 'n_' .. o[1], -1)
  redis.call('HINCRBY', KEYS[2], 'n_cancelled', 1)
  if redis.call('HINCRBY', KEYS[3], o[2], -qty) <= 0 then
    redis.call('HDEL', KEYS[3], o[2])
  end
  if o[1] == 'confirmed' then
    redis.call('ZREM', KEYS[4], ARGV[2])
    redis.call('XADD', KEYS[5], '*', 'order_id', ARGV[2], 'user_id', o[2],
      'quantity', o[3], 'created_at', o[4], 'status', 'cancelled')
  end
  local retention = tonumber(ARGV[1]) or 0
  if retention > 0 then
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
