-- bucket_put.lua — create a bucket of a sale, or bring its copy of the
-- sale's settings up to date (the home hash's cfg_v); never touches its stock.
--
-- KEYS[1]  seckill:{S/k}:sale   the bucket's hash
--
-- ARGV[1]  sale id S
-- ARGV[2]  bucket number k
-- ARGV[3]  cfg_v: the home hash's settings version
-- ARGV[4]  starts_at (ms)
-- ARGV[5]  ends_at (ms, or "" = open-ended)
-- ARGV[6]  per_user_limit
-- ARGV[7]  pay_window_s ("" = no pay window; confirm.lua reads the bucket's copy)
--
-- Returns 1 when it wrote, 0 when the bucket already had this version or a
-- newer one (an older writer never overwrites a newer one).

local b = KEYS[1]
local have = tonumber(redis.call('HGET', b, 'cfg_v'))
local v = tonumber(ARGV[3])
if have and have >= v then
  return 0
end
if redis.call('HEXISTS', b, 'stock_left') == 0 then
  redis.call('HSET', b, 'stock_left', 0, 'sale_id', ARGV[1], 'bucket', ARGV[2],
    'n_queued', 0, 'n_confirmed', 0, 'n_failed', 0, 'n_cancelled', 0)
end
redis.call('HSET', b, 'starts_at', ARGV[4], 'ends_at', ARGV[5],
  'per_user_limit', ARGV[6], 'cfg_v', v)
if (ARGV[7] or '') == '' then
  redis.call('HDEL', b, 'pay_window_s')
else
  redis.call('HSET', b, 'pay_window_s', ARGV[7])
end
return 1
