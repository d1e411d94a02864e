-- release.lua — delivery failed for good (a definite "not written"): the
-- order fails and its units go back.
--
-- KEYS[1]  seckill:{S}:order:{O}   order hash
-- KEYS[2]  seckill:{S}:sale        sale hash
-- KEYS[3]  seckill:{S}:units       hash user -> units held
-- KEYS[4]  seckill:{S}:orders      the sale's stream
--
-- ARGV[1]  consumer group
-- ARGV[2]  stream entry id
-- ARGV[3]  retention of a final order hash, seconds ("" or 0 = kept forever)
--
-- Returns 1 when the order went queued -> failed (stock_left and the user's
-- units went back up by its quantity), 0 when it was not queued (nothing
-- changes but the XACK). Idempotent: a replayed release returns nothing twice.
-- The entry is acknowledged and deleted from the stream; the order hash
-- expires after the retention.

local o = redis.call('HMGET', KEYS[1], 'status', 'user_id', 'quantity')
local changed = 0
if o[1] == 'queued' then
  local qty = tonumber(o[3])
  redis.call('HSET', KEYS[1], 'status', 'failed')
  redis.call('HINCRBY', KEYS[2], 'stock_left', qty)
  redis.call('HINCRBY', KEYS[2], 'n_queued', -1)
  redis.call('HINCRBY', KEYS[2], 'n_failed', 1)
  if redis.call('HINCRBY', KEYS[3], o[2], -qty) <= 0 then
    redis.call('HDEL', KEYS[3], o[2])
  end
  local retention = tonumber(ARGV[3]) or 0
  if retention > 0 then
    redis.call('EXPIRE', KEYS[1], retention)
  end
  changed = 1
end
redis.call('XACK', KEYS[4], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[4], ARGV[2])
return changed
