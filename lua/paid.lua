-- paid.lua — the backend settles a confirmed order: confirmed -> paid, once
-- (issue 15). A compare-and-set on the status: a paid racing expire.lua has
-- exactly one winner.
--
-- KEYS[1]  seckill:{S}:order:{O}          order hash
-- KEYS[2]  seckill:{S}:sale               sale hash (counters)
-- KEYS[3]  seckill:{S}:pay_deadlines      sorted set order id -> deadline (ms)
-- KEYS[4]  seckill:{S}:orders             the sale's stream (the sink's status event)
--
-- ARGV[1]  now in ms, or "" to use Redis TIME
-- ARGV[2]  retention of a final order hash, seconds ("" or 0 = kept forever)
-- ARGV[3]  order id
--
-- Returns {code, field1, value1, ...}: the order hash after the call.
--   {0 NOT_FOUND}
--   {1 PAID, ...}          was confirmed, now paid (a status event queued)
--   {2 ALREADY_PAID, ...}  nothing changed (a repeated paid)
--   {3 EXPIRED, ...}       expired, or its deadline has passed (the sweeper
--                          has not marked it yet): nothing changed
--   {4 NOT_PAYABLE, ...}   queued, undetermined, failed or cancelled

local o = redis.call('HMGET', KEYS[1], 'status', 'pay_deadline', 'user_id', 'quantity',
  'created_at')
if not o[1] then
  return {0}
end
local now
if ARGV[1] ~= "" then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local code = 4
if o[1] == 'paid' then
  code = 2
elseif o[1] == 'expired' then
  code = 3
elseif o[1] == 'confirmed' then
  local deadline = tonumber(o[2])
  if deadline and now >= deadline then
    code = 3
  else
    redis.call('HSET', KEYS[1], 'status', 'paid', 'paid_at', now)
    redis.call('HINCRBY', KEYS[2], 'n_confirmed', -1)
    redis.call('HINCRBY', KEYS[2], 'n_paid', 1)
    redis.call('ZREM', KEYS[3], ARGV[3])
    redis.call('XADD', KEYS[4], '*', 'order_id', ARGV[3], 'user_id', o[3],
      'quantity', o[4], 'created_at', o[5], 'status', 'paid', 'at', now)
    local retention = tonumber(ARGV[2]) or 0
    if retention > 0 then
      redis.call('EXPIRE', KEYS[1], retention)
    end
    code = 1
  end
end
local out = {code}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all do
  out[#out + 1] = all[i]
end
return out
