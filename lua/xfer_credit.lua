-- xfer_credit.lua — step 2 of a stock transfer: credit the units taken by
-- xfer_take.lua to the destination, once.
--
-- KEYS[1]  destination hash     seckill:{S}:sale (field "pool") or a bucket's
-- KEYS[2]  destination xfer_in  sorted set: credited transfer ids -> ms
--
-- ARGV[1]  transfer id X
-- ARGV[2]  the destination's stock field: "pool" or "stock_left"
-- ARGV[3]  amount (as recorded by xfer_take.lua)
-- ARGV[4]  now in ms, or "" to use Redis TIME
--
-- Returns 1 when credited now, 0 when X was credited before (nothing
-- changed). Ids stay in xfer_in for a day: a re-run within a day is a no-op.

local now
if ARGV[4] ~= "" then
  now = tonumber(ARGV[4])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  return 0
end
redis.call('HINCRBY', KEYS[1], ARGV[2], tonumber(ARGV[3]))
redis.call('HINCRBY', KEYS[1], 'xfer_seq', 1)
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - 86400000))
return 1
