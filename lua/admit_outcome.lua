-- admit_outcome.lua — after an admit.lua call whose answer was lost (a
-- timeout, a broken connection): did it create its order, and can it still?
--
-- KEYS[1]  seckill:{S}:order:{O}   the hash of the order that call would create
-- ARGV[1]  that call's deadline (ARGV[13] of admit.lua), ms since the epoch
--
-- Returns {1, quantity, status, created_at_ms}  the order exists: it was admitted
--         {0, now_ms - deadline}               it does not exist (yet)
--
-- Read-only. When the second element of {0, …} is > 0, Redis's clock is
-- past the deadline: the call either ran already and did not admit, or will
-- run later and refuse (admit.lua answers LATE past its deadline), so the
-- order will never exist — provided Redis's clock does not step back.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local o = redis.call('HMGET', KEYS[1], 'quantity', 'status', 'created_at')
if o[1] then
  return {1, tonumber(o[1]), o[2], tonumber(o[3]) or 0}
end
return {0, now - tonumber(ARGV[1])}
