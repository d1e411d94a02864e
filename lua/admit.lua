-- admit.lua — the whole buy decision, atomically, in one EVALSHA.
--
-- KEYS[1]  seckill:{S}:sale             sale hash
-- KEYS[2]  seckill:{S}:units            hash user -> units held
-- KEYS[3]  seckill:{S}:idemkey:{len(U)}:{U}:{K}  idempotency key (any key of the
--                                       sale's slot when ARGV[4] is "")
-- KEYS[4]  seckill:{S}:order:{O}        the hash of the order this call would create
-- KEYS[5]  seckill:{S}:orders           the sale's stream
-- KEYS[6]  seckill:{S}:bucket           the sale's token bucket
-- KEYS[7]  seckill:{S}:ubucket:{U}      the user's token bucket in the sale
-- KEYS[8]  seckill:{S}:idem:{U}:{K}     the same key in the layout before issue 12
--                                       (only read, and only when ARGV[4] is "1")
--
-- ARGV[1]  user id
-- ARGV[2]  quantity (integer >= 1; the caller has checked its type)
-- ARGV[3]  order id for a new order: "<sale_id>.<16 random chars>"
-- ARGV[4]  "1" when the request carried an Idempotency-Key, else ""
-- ARGV[5]  idempotency TTL, seconds
-- ARGV[6]  now in ms since the epoch, or "" to use Redis TIME (tests pass a value)
-- ARGV[7]  sale bucket rate, tokens/s, or "" for unlimited
-- ARGV[8]  sale bucket burst (tokens)
-- ARGV[9]  per-user bucket rate, tokens/s, or "" for unlimited
-- ARGV[10] per-user bucket burst
-- ARGV[11] max backlog (undelivered orders of the sale: its n_queued), 0 = no bound
-- ARGV[12] sale id
-- ARGV[13] deadline, ms since the epoch by Redis's clock, or ""/absent for none:
--          a call that runs later than this changes nothing and answers LATE
--
-- Returns an array whose first element is the outcome (seckill.scripts.Admit):
--   {0 OK, order_id, stock_left, created_at_ms}
--   {1 SOLD_OUT, stock_left}
--   {2 LIMIT_REACHED, units_held}
--   {3 RATE_LIMITED, retry_after_ms}
--   {4 NOT_FOUND}
--   {5 NOT_STARTED, starts_at_ms}
--   {6 ENDED}
--   {7 BAD_QUANTITY, per_user_limit}
--   {8 OVERLOADED, backlog}              backlog = the sale's n_queued
--   {9 REPLAY, order_id, quantity, status, created_at_ms}
--   {10 LATE, now_ms}                     past the deadline: nothing done
--   {12 BUCKETED, buckets, tags}          KEYS[1] is the home hash of a sale
--                                         with buckets > 1: nothing done; buy
--                                         in the user's bucket (tags are
--                                         space-separated)
--
-- Invariants kept: stock_left never goes below 0; a user's units never exceed
-- per_user_limit; every admitted order is in the stream (and its hash exists)
-- before this script returns; one Idempotency-Key of a user maps to at most one
-- order, and a replay answers only the order's own user. The per-user and
-- sale buckets are only charged when both have a token, so a refusal by one
-- does not burn a token of the other.
--
-- The sale hash keeps no separate backlog counter: the backlog is n_queued
-- (a "backlog" field left by an older version is ignored). An admission
-- writes stock_left and n_queued with one HSET of values computed from the
-- HMGET at the top, which is exact because the script runs atomically.

local sale_key, units_key, idem_key, order_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local stream_key, bucket_key, ubucket_key = KEYS[5], KEYS[6], KEYS[7]
local user, qty, order_id = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local has_idem = ARGV[4] ~= ""

local sale = redis.call('HMGET', sale_key,
  'stock_left', 'starts_at', 'ends_at', 'per_user_limit', 'n_queued', 'buckets')
if sale[6] then
  return {12, tonumber(sale[6]), redis.call('HGET', sale_key, 'tags')}
end
if not sale[1] then
  return {4}
end
local stock_left = tonumber(sale[1])
local starts_at = tonumber(sale[2]) or 0
local ends_at = tonumber(sale[3])
local per_user_limit = tonumber(sale[4])
local n_queued = tonumber(sale[5]) or 0

-- A replayed Idempotency-Key answers with its order, whatever else changed,
-- but only to the order's own user: a key naming another user's order (only
-- the ambiguous layout before issue 12 could) is no replay, and the buy goes
-- on as a fresh one (and, admitted, takes the key over).
if has_idem then
  local function replay(key)
    local existing = redis.call('GET', key)
    if not existing then
      return nil
    end
    -- Same sale, same hash slot: the order key differs from KEYS[4] only in its id.
    local prefix = string.sub(order_key, 1, #order_key - #order_id)
    local o = redis.call('HMGET', prefix .. existing, 'user_id', 'quantity', 'status', 'created_at')
    if o[1] ~= user then
      return nil
    end
    return {9, existing, tonumber(o[2]) or 0, o[3] or 'queued', tonumber(o[4]) or 0}
  end
  local found = replay(idem_key) or replay(KEYS[8])
  if found then
    return found
  end
end

local now
if ARGV[6] ~= "" then
  now = tonumber(ARGV[6])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The gateway stopped waiting for this call at the deadline, and may have
-- told the customer "unavailable" after checking (by Redis's clock) that the
-- deadline had passed and the order did not exist: a late run must not admit.
local deadline = tonumber(ARGV[13])
if deadline and now > deadline then
  return {10, now}
end

if now < starts_at then
  return {5, starts_at}
end
if ends_at and now >= ends_at then
  return {6}
end
if qty > per_user_limit then
  return {7, per_user_limit}
end

-- Token buckets: refill by elapsed time (Redis clock), take one token from each.
local function refill(key, rate, burst)
  local b = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens, ts = tonumber(b[1]), tonumber(b[2])
  if not tokens then
    return burst
  end
  if now > ts then
    tokens = tokens + (now - ts) * rate / 1000
  end
  if tokens > burst then
    tokens = burst
  end
  return tokens
end

local rate, burst = tonumber(ARGV[7]), tonumber(ARGV[8])
local urate, uburst = tonumber(ARGV[9]), tonumber(ARGV[10])
local tokens, utokens
-- a Retry-After is at most an hour; a bucket's TTL stays an integer Lua prints
-- exactly (below 1e14: "%.14g"), whatever the rate and burst
local MAX_MS, MAX_TTL_MS = 3600000, 1e13
local wait_ms = 0
if rate then
  tokens = refill(bucket_key, rate, burst)
  if tokens < 1 then
    wait_ms = math.min(MAX_MS, math.ceil((1 - tokens) * 1000 / rate))
  end
end
if urate then
  utokens = refill(ubucket_key, urate, uburst)
  if utokens < 1 then
    wait_ms = math.max(wait_ms, math.min(MAX_MS, math.ceil((1 - utokens) * 1000 / urate)))
  end
end
if wait_ms > 0 then
  return {3, wait_ms}
end
if rate then
  redis.call('HSET', bucket_key, 'tokens', tostring(tokens - 1), 'ts', now)
  redis.call('PEXPIRE', bucket_key, math.min(MAX_TTL_MS, math.ceil(burst * 1000 / rate)) + 1000)
end
if urate then
  redis.call('HSET', ubucket_key, 'tokens', tostring(utokens - 1), 'ts', now)
  redis.call('PEXPIRE', ubucket_key, math.min(MAX_TTL_MS, math.ceil(uburst * 1000 / urate)) + 1000)
end

local held = tonumber(redis.call('HGET', units_key, user)) or 0
if held + qty > per_user_limit then
  return {2, held}
end
if stock_left < qty then
  return {1, stock_left}
end
local max_backlog = tonumber(ARGV[11])
if max_backlog > 0 and n_queued >= max_backlog then
  return {8, n_queued}
end

-- Atomic script: nothing changed the hash since the HMGET above.
stock_left = stock_left - qty
redis.call('HSET', sale_key, 'stock_left', stock_left, 'n_queued', n_queued + 1)
redis.call('HINCRBY', units_key, user, qty)
redis.call('HSET', order_key,
  'order_id', order_id, 'sale_id', ARGV[12], 'user_id', user,
  'quantity', qty, 'status', 'queued', 'created_at', now)
if has_idem then
  redis.call('SET', idem_key, order_id, 'EX', tonumber(ARGV[5]))
end
redis.call('XADD', stream_key, '*',
  'order_id', order_id, 'user_id', user, 'quantity', qty, 'created_at', now)
return {0, order_id, stock_left, now}
