-- sale_put.lua — create a sale, or update the fields given, atomically.
--
-- KEYS[1]  seckill:{S}:sale   sale hash
--
-- ARGV[1]  JSON object with any of: name (string), stock (int >= 0),
--          starts_at (ms, or null = now), ends_at (ms, or null = open-ended),
--          per_user_limit (int >= 1), buckets (int 1..64), pay_window_s
--          (int >= 1, or null = no pay window). The caller has checked types
--          and ranges.
-- ARGV[2]  now in ms, or "" to use Redis TIME
-- ARGV[3]  sale id (the default name)
-- ARGV[4]  the bucket tags, space-separated, when creating a sale with
--          buckets > 1 (else "")
--
-- Returns {code, field1, value1, ...} (code = seckill.scripts.SalePut; the
-- pairs are the sale hash after the call):
--   {0 UPDATED, ...}  {1 CREATED, ...}
--   {2 MISSING_STOCK}          a new sale needs "stock"
--   {3 BAD_WINDOW}             ends_at is not after starts_at
--   {4 STOCK_CONFLICT, sold}   the new total is below the units already sold
--                              (with buckets: below the units not in the pool)
--   {5 BUCKETS_IMMUTABLE, n}   buckets given differs from the sale's n
--
-- Invariant kept: stock_left = stock_total - sold, with sold unchanged by an
-- update, so stock_left moves by exactly the difference and never below 0.
--
-- A sale with buckets > 1 keeps no stock_left here but a "pool" (the units
-- not in any bucket), plus buckets, tags, cfg_v (bumped by every update, so
-- bucket_put.lua copies the settings to the buckets in order) and xfer_seq.
-- Its stock changes move the pool: pool = stock_total - (units in buckets,
-- in flight and sold), never below 0.

local sale_key = KEYS[1]
local given = cjson.decode(ARGV[1])
local now
if ARGV[2] ~= "" then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function time_or(value, default)
  if value == cjson.null then
    return default
  end
  return value
end

local cur = redis.call('HMGET', sale_key,
  'stock_total', 'stock_left', 'starts_at', 'ends_at', 'per_user_limit', 'name',
  'buckets', 'pool')
local created = cur[1] == false
local buckets = tonumber(cur[7]) or 1
if created then
  buckets = given.buckets or 1
elseif given.buckets ~= nil and given.buckets ~= buckets then
  return {5, buckets}
end
local stock_field = 'stock_left'
if buckets > 1 then
  stock_field = 'pool'
  cur[2] = cur[8]
end
local name, total, left, starts_at, ends_at, limit
if created then
  if given.stock == nil then
    return {2}
  end
  name = given.name or ARGV[3]
  total = given.stock
  left = given.stock
  starts_at = now
  if given.starts_at ~= nil then starts_at = time_or(given.starts_at, now) end
  ends_at = ''
  if given.ends_at ~= nil then ends_at = time_or(given.ends_at, '') end
  limit = given.per_user_limit or 1
else
  total, left = tonumber(cur[1]), tonumber(cur[2])
  starts_at, ends_at = tonumber(cur[3]), tonumber(cur[4]) or ''
  limit, name = tonumber(cur[5]), cur[6]
  if given.name ~= nil then name = given.name end
  if given.per_user_limit ~= nil then limit = given.per_user_limit end
  if given.starts_at ~= nil then starts_at = time_or(given.starts_at, now) end
  if given.ends_at ~= nil then ends_at = time_or(given.ends_at, '') end
  if given.stock ~= nil then
    local sold = total - left
    if given.stock < sold then
      return {4, sold}
    end
    left = left + (given.stock - total)
    total = given.stock
  end
end
if ends_at ~= '' and ends_at <= starts_at then
  return {3}
end

redis.call('HSET', sale_key, 'name', name, 'stock_total', total, stock_field, left,
  'starts_at', starts_at, 'ends_at', ends_at, 'per_user_limit', limit)
if given.pay_window_s ~= nil then
  if given.pay_window_s == cjson.null then
    redis.call('HDEL', sale_key, 'pay_window_s')
  else
    redis.call('HSET', sale_key, 'pay_window_s', given.pay_window_s)
  end
end
if created then
  redis.call('HSET', sale_key, 'created_at', now,
    'n_queued', 0, 'n_confirmed', 0, 'n_failed', 0, 'n_cancelled', 0,
    'n_paid', 0, 'n_expired', 0)
  if buckets > 1 then
    redis.call('HSET', sale_key, 'buckets', buckets, 'tags', ARGV[4], 'xfer_seq', 0)
  end
end
if buckets > 1 then
  redis.call('HINCRBY', sale_key, 'cfg_v', 1)
end
local code = 0
if created then code = 1 end
local out = {code}
local all = redis.call('HGETALL', sale_key)
for i = 1, #all do
  out[#out + 1] = all[i]
end
return out
