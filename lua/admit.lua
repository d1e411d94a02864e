-- admit.lua — the buy decision for a batch of buys of one sale (or one bucket
-- of it: one hash slot), in one EVALSHA. The buys are decided one after the
-- other, in order, each exactly as if it had been a call of its own: the script
-- is atomic as a whole, so nothing else runs between two buys of a batch, and
-- a buy sees everything the buys before it did (stock, units, token buckets,
-- orders and Idempotency-Keys). The gateway gathers the buys of one event-loop
-- turn for one sale (seckill.redis.scripts, "batched admission"); a batch of
-- one is a single buy.
--
-- KEYS[1]  seckill:{S}:sale             sale hash
-- KEYS[2]  seckill:{S}:units            hash user -> units held
-- KEYS[3]  seckill:{S}:orders           the sale's stream
-- KEYS[4]  seckill:{S}:bucket           the sale's token bucket
-- then, for buy i (1..N), j = 4 + 4 * (i - 1):
-- KEYS[j+1] seckill:{S}:idemkey:{len(U)}:{U}:{K}  idempotency key (any key of the
--                                       sale's slot when the buy has none)
-- KEYS[j+2] seckill:{S}:order:{O}       the hash of the order this buy would create
-- KEYS[j+3] seckill:{S}:ubucket:{U}     the user's token bucket in the sale
-- KEYS[j+4] seckill:{S}:idem:{U}:{K}    the same key in the layout before issue 12
--                                       (only read, and only when the buy has a key)
--
-- ARGV[1]  idempotency TTL, seconds
-- ARGV[2]  now in ms since the epoch, or "" to use Redis TIME (tests pass a value)
-- ARGV[3]  sale bucket rate, tokens/s, or "" for unlimited
-- ARGV[4]  sale bucket burst (tokens)
-- ARGV[5]  per-user bucket rate, tokens/s, or "" for unlimited
-- ARGV[6]  per-user bucket burst
-- ARGV[7]  max backlog (undelivered orders of the sale: its n_queued), 0 = no bound
-- ARGV[8]  sale id
-- then, for buy i, a = 8 + 5 * (i - 1):
-- ARGV[a+1] user id
-- ARGV[a+2] quantity (integer >= 1; the caller has checked its type)
-- ARGV[a+3] order id for a new order: "<sale_id>.<16 random chars>"
-- ARGV[a+4] "1" when the request carried an Idempotency-Key, else ""
-- ARGV[a+5] deadline, ms since the epoch by Redis's clock, or "" for none:
--           a buy decided later than this changes nothing and answers LATE
--
-- Returns one array per buy, in order, whose first element is the outcome
-- (seckill.scripts.Admit):
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
-- (a "backlog" field left by an older version is ignored). The sale hash is
-- read once per batch (one HMGET at the top); stock_left and n_queued are kept
-- in locals from buy to buy and written with one HSET at the end when a buy
-- was admitted, which is exact because the script runs atomically and nothing
-- else in it writes them. Everything a buy keyed by its user or its order
-- reads (units, the token buckets, orders, Idempotency-Keys) is read from
-- Redis at that buy, so a buy sees the writes of the buys before it.

local sale_key, units_key, stream_key, bucket_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local n = (#KEYS - 4) / 4
local results = {}

local sale = redis.call('HMGET', sale_key,
  'stock_left', 'starts_at', 'ends_at', 'per_user_limit', 'n_queued', 'buckets')
if sale[6] then
  local bucketed = {12, tonumber(sale[6]), redis.call('HGET', sale_key, 'tags')}
  for i = 1, n do
    results[i] = bucketed
  end
  return results
end
if not sale[1] then
  for i = 1, n do
    results[i] = {4}
  end
  return results
end
local stock_left = tonumber(sale[1])
local starts_at = tonumber(sale[2]) or 0
local ends_at = tonumber(sale[3])
local per_user_limit = tonumber(sale[4])
local n_queued = tonumber(sale[5]) or 0
local admitted = false

local now
if ARGV[2] ~= "" then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local idem_ttl = tonumber(ARGV[1])
local rate, burst = tonumber(ARGV[3]), tonumber(ARGV[4])
local urate, uburst = tonumber(ARGV[5]), tonumber(ARGV[6])
local max_backlog = tonumber(ARGV[7])
local sale_id = ARGV[8]
-- a Retry-After is at most an hour; a bucket's TTL stays an integer Lua prints
-- exactly (below 1e14: "%.14g"), whatever the rate and burst
local MAX_MS, MAX_TTL_MS = 3600000, 1e13

-- Token buckets: refill by elapsed time (Redis clock).
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

-- Each buy in turn, decided on the state the buys before it left. A
-- decision stores the buy's answer and breaks out of the repeat: on to the
-- next buy. (Inline, not a function per buy: a closure with this many
-- upvalues made a single buy cost Valkey ~4 µs more.)
for i = 1, n do
  local j, a = 4 + 4 * (i - 1), 8 + 5 * (i - 1)
  local user, qty, order_id = ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3]
  local has_idem, deadline = ARGV[a + 4] ~= "", tonumber(ARGV[a + 5])
  local idem_key, order_key, ubucket_key, legacy_key = KEYS[j + 1], KEYS[j + 2], KEYS[j + 3], KEYS[j + 4]
  repeat
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
        -- Same sale, same hash slot: the order key differs from this buy's only in its id.
        local prefix = string.sub(order_key, 1, #order_key - #order_id)
        local o = redis.call('HMGET', prefix .. existing, 'user_id', 'quantity', 'status', 'created_at')
        if o[1] ~= user then
          return nil
        end
        return {9, existing, tonumber(o[2]) or 0, o[3] or 'queued', tonumber(o[4]) or 0}
      end
      local found = replay(idem_key) or replay(legacy_key)
      if found then
        results[i] = found
        break
      end
    end

    -- The gateway stopped waiting for this buy at the deadline, and may have
    -- told the customer "unavailable" after checking (by Redis's clock) that the
    -- deadline had passed and the order did not exist: a late run must not admit.
    if deadline and now > deadline then
      results[i] = {10, now}
      break
    end

    if now < starts_at then
      results[i] = {5, starts_at}
      break
    end
    if ends_at and now >= ends_at then
      results[i] = {6}
      break
    end
    if qty > per_user_limit then
      results[i] = {7, per_user_limit}
      break
    end

    -- Take one token from each bucket, only when both have one.
    local tokens, utokens
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
      results[i] = {3, wait_ms}
      break
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
      results[i] = {2, held}
      break
    end
    if stock_left < qty then
      results[i] = {1, stock_left}
      break
    end
    if max_backlog > 0 and n_queued >= max_backlog then
      results[i] = {8, n_queued}
      break
    end

    -- Atomic script: nothing changed the hash since the HMGET above but the
    -- buys before this one, whose changes are in stock_left and n_queued.
    stock_left = stock_left - qty
    n_queued = n_queued + 1
    admitted = true
    redis.call('HINCRBY', units_key, user, qty)
    redis.call('HSET', order_key,
      'order_id', order_id, 'sale_id', sale_id, 'user_id', user,
      'quantity', qty, 'status', 'queued', 'created_at', now)
    if has_idem then
      redis.call('SET', idem_key, order_id, 'EX', idem_ttl)
    end
    redis.call('XADD', stream_key, '*',
      'order_id', order_id, 'user_id', user, 'quantity', qty, 'created_at', now)
    results[i] = {0, order_id, stock_left, now}
  until true
end
if admitted then
  redis.call('HSET', sale_key, 'stock_left', stock_left, 'n_queued', n_queued)
end
return results
