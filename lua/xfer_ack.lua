-- xfer_ack.lua — step 3 of a stock transfer: the destination has the units
-- (xfer_credit.lua ran): the transfer is no longer outstanding at its source.
--
-- KEYS[1]  source xfer_out   hash: transfer id -> "<dest tag> <amount> <ms>"
-- KEYS[2]  source xfer_done  sorted set: acknowledged transfer ids -> ms
--
-- ARGV[1]  transfer id X
-- ARGV[2]  now in ms, or "" to use Redis TIME
--
-- Returns 1 when acknowledged now, 0 when it was not outstanding. Only run
-- after the credit: an outstanding transfer whose credit is not in the
-- destination's xfer_in still holds its units "in flight".

local now
if ARGV[2] ~= "" then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local changed = redis.call('HDEL', KEYS[1], ARGV[1])
if changed == 1 then
  redis.call('ZADD', KEYS[2], now, ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - 86400000))
return changed
