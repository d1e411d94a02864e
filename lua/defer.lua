-- defer.lua — a round of deliveries ended with an unknown outcome: note when
-- the doubt began and when to try again; the entry stays pending.
--
-- KEYS[1]  seckill:{S}:order:{O}   order hash
--
-- ARGV[1]  now in ms
-- ARGV[2]  retry at, ms (the next round does not start before)
--
-- Returns {unknown_since_ms, rounds} when the order is queued, else {}
-- (nothing written: a cancelled or expired order is not brought back as a
-- partial hash).

if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then
  return {}
end
redis.call('HSETNX', KEYS[1], 'unknown_since', ARGV[1])
redis.call('HSET', KEYS[1], 'retry_at', ARGV[2])
local rounds = redis.call('HINCRBY', KEYS[1], 'rounds', 1)
return {tonumber(redis.call('HGET', KEYS[1], 'unknown_since')), rounds}
