-- begin.lua — a worker is about to deliver an order: read its state and, when
-- a try is due, count it (so that a later holder knows a try may have gone out).
--
-- KEYS[1]  seckill:{S}:order:{O}   order hash
--
-- ARGV[1]  now in ms
--
-- Returns {status, unknown_since, retry_at, attempts_before, due, rounds}: ""
-- for a field that is not set (status "" = no such order). due is 1 when the order
-- is queued and not backing off (then `attempts` went up by one), else 0.

local o = redis.call('HMGET', KEYS[1], 'status', 'unknown_since', 'retry_at', 'attempts', 'rounds')
local status, since, retry_at = o[1] or '', o[2] or '', o[3] or ''
local attempts = tonumber(o[4]) or 0
local due = 0
if status == 'queued' and (retry_at == '' or tonumber(ARGV[1]) >= tonumber(retry_at)) then
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  due = 1
end
return {status, since, retry_at, attempts, due, tonumber(o[5]) or 0}
