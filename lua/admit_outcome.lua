-- admit_outcome.lua — after an admit.lua call whose answer was lost (a
-- timeout, a broken connection): did that buy get an order, and can it still?
--
-- KEYS[1]  seckill:{S}:order:{O}       the hash of the order that call would create
-- KEYS[2]  seckill:{S}:idemkey:…       its Idempotency-Key (admit.lua's KEYS[3]) and
-- KEYS[3]  seckill:{S}:idem:…          the same in the old layout (KEYS[8]); both
--                                      only read when ARGV[3] is not ""
-- ARGV[1]  that call's deadline (ARGV[13] of admit.lua), ms since the epoch
-- ARGV[2]  the order id O
-- ARGV[3]  the user id when the buy carried an Idempotency-Key, else ""
--
-- Returns {1, order_id, quantity, status, created_at_ms}  the buy has an order:
--            O itself, or the order its Idempotency-Key names for this user
--            (what a replay would answer; O can then never be created)
--         {0, now_ms - deadline}                          no order (yet)
--
-- Read-only. When the second element of {0, …} is > 0, Redis's clock is
-- past the deadline: the call either ran already and did not admit, or will
-- run later and refuse (admit.lua answers LATE past its deadline), so O will
-- never exist — provided Redis's clock does not step back.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local order_id, user = ARGV[2], ARGV[3]
local prefix = string.sub(KEYS[1], 1, #KEYS[1] - #order_id)

local function order_of(id, owner)
  local o = redis.call('HMGET', prefix .. id, 'user_id', 'quantity', 'status', 'created_at')
  if o[1] and (owner == nil or o[1] == owner) then
    return {1, id, tonumber(o[2]), o[3], tonumber(o[4]) or 0}
  end
  return nil
end

local found = order_of(order_id, nil)
if found then
  return found
end
if user ~= "" then
  for _, key in ipairs({KEYS[2], KEYS[3]}) do
    local id = redis.call('GET', key)
    found = id and order_of(id, user)
    if found then
      return found
    end
  end
end
return {0, now - tonumber(ARGV[1])}
