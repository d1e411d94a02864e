-- xfer_take.lua — step 1 of a stock transfer (docs/architecture.md, "One
-- hot sale on several shards"): take units from a source, the sale's pool
-- (home hash, field "pool") or a bucket (bucket hash, field "stock_left"),
-- and record the transfer as outstanding at the source.
--
-- KEYS[1]  source hash          seckill:{S}:sale or seckill:{S/k}:sale
-- KEYS[2]  source xfer_out      hash: transfer id -> "<dest tag> <amount> <ms>"
-- KEYS[3]  source xfer_done     sorted set: acknowledged transfer ids -> ms
--
-- ARGV[1]  transfer id X (fresh per transfer)
-- ARGV[2]  the source's stock field: "pool" or "stock_left"
-- ARGV[3]  need: units wanted at least (-1 = everything there is)
-- ARGV[4]  spread: when > 0, take max(need, floor(available / spread))
-- ARGV[5]  destination tag
-- ARGV[6]  now in ms, or "" to use Redis TIME
--
-- Returns {amount, seq, outstanding, state, left}:
--   amount       units taken (now outstanding), 0 = none (nothing recorded)
--   seq          the source's xfer_seq after the call: it grows with every
--                take of > 0 units and every credit, so an unchanged seq
--                proves no unit entered or left this source in between
--   outstanding  transfers outstanding at the source BEFORE this call
--   state        0 taken now, 1 X was already taken (its amount returned,
--                nothing changed), 2 X is already acknowledged (nothing changed)
--   left         the source's field after the call
-- Never takes more than the source holds: the field never goes below 0.

local src, out, done = KEYS[1], KEYS[2], KEYS[3]
local x, field = ARGV[1], ARGV[2]
local seq = tonumber(redis.call('HGET', src, 'xfer_seq')) or 0
local outstanding = redis.call('HLEN', out)
local available = tonumber(redis.call('HGET', src, field)) or 0

local rec = redis.call('HGET', out, x)
if rec then
  local _, _, amount = string.find(rec, '^%S+ (%d+)')
  return {tonumber(amount), seq, outstanding - 1, 1, available}
end
if redis.call('ZSCORE', done, x) then
  return {0, seq, outstanding, 2, available}
end

local need, spread = tonumber(ARGV[3]), tonumber(ARGV[4])
local amount = need
if need < 0 then
  amount = available
elseif spread > 0 then
  amount = math.max(need, math.floor(available / spread))
end
if amount > available then
  amount = available
end
if amount <= 0 then
  return {0, seq, outstanding, 0, available}
end

local now
if ARGV[6] ~= "" then
  now = tonumber(ARGV[6])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
redis.call('HSET', src, field, available - amount)
seq = redis.call('HINCRBY', src, 'xfer_seq', 1)
redis.call('HSET', out, x, ARGV[5] .. ' ' .. amount .. ' ' .. now)
return {amount, seq, outstanding, 0, available - amount}
