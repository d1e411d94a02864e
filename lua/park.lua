-- park.lua — the order's delivery stayed unknown past the budget: it becomes
-- undetermined, its stock still held, for an operator to settle.
--
-- KEYS[1]  seckill:{S}:order:{O}          order hash
-- KEYS[2]  seckill:{S}:sale               sale hash (counters)
-- KEYS[3]  seckill:{S}:orders             the sale's stream
-- KEYS[4]  seckill:{S}:undetermined       sorted set: order id -> parked at (ms)
--
-- ARGV[1]  consumer group
-- ARGV[2]  stream entry id
-- ARGV[3]  now in ms, or "" to use Redis TIME
-- ARGV[4]  order id
--
-- Returns 1 when the order went queued -> undetermined, 0 when it was not
-- queued (nothing changes but the XACK). stock_left and the user's units do
-- not move: the sink may hold the order. The entry leaves the stream (XACK +
-- XDEL); the sorted set is where the order is found again.

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
  redis.call('HSET', KEYS[1], 'status', 'undetermined', 'undetermined_at', now)
  redis.call('HINCRBY', KEYS[2], 'n_queued', -1)
  redis.call('HINCRBY', KEYS[2], 'n_undetermined', 1)
  redis.call('ZADD', KEYS[4], now, ARGV[4])
  changed = 1
end
redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[3], ARGV[2])
return changed
