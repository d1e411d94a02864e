-- wrk script for the seckill benchmark: POST a buy with a distinct X-User-Id.
--
--   wrk -t2 -c64 -d10s --latency -s loadtest/wrk/buy.lua URL -- PATH [USERS] [THREADS] [PREFIX]
--
-- PATH     the buy path, e.g. /api/v1/sales/s1/orders (default /api/v1/sales/bench/orders)
-- USERS    0 (default): every request has a new user id; N > 0: ids cycle
--          through a population of N users (mixed_spike: 200000)
-- THREADS  wrk's -t (default 2), so that the threads interleave their ids
-- PREFIX   prepended to every user id (default "u"); give each run its own,
--          so a warm-up never uses a measured run's users
--
-- User ids: thread k (0-based) of T sends sequence numbers k, k+T, k+2T, ...
-- so ids are unique across threads without any shared state; with USERS = N
-- the number is taken modulo N.
--
-- done() prints one machine-readable line, "WRK_JSON {...}", with requests,
-- duration (µs), latency percentiles (µs), socket errors and the count of
-- non-2xx/3xx answers (wrk's errors.status; 409 and 429 land there too).
-- There is deliberately no response() callback: it makes wrk parse every
-- header and body into Lua, and wrk shares the CPU with the server here.

local next_id = 0
local threads = {}

function setup(thread)
   thread:set("thread_id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

function init(args)
   path = args[1] or "/api/v1/sales/bench/orders"
   users = tonumber(args[2] or "0")
   step = tonumber(args[3] or "2")
   prefix = args[4] or "u"
   seq = thread_id
   headers = { ["X-User-Id"] = "" }
end

function request()
   local n = seq
   seq = seq + step
   if users > 0 then
      n = n % users
   end
   headers["X-User-Id"] = prefix .. n
   return wrk.format("POST", path, headers, nil)
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
         .. '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,'
         .. '"p50":%d,"p90":%d,"p99":%d,"p999":%d},'
         .. '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d},'
         .. '"threads":%d}\n',
      summary.requests, summary.duration, summary.bytes,
      latency.min, latency.mean, latency.stdev, latency.max,
      latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9),
      e.connect, e.read, e.write, e.timeout, e.status,
      #threads))
end
