-- ack.lua — an entry whose order needs nothing more (cancelled, already
-- final, malformed): acknowledge it and delete it from the stream.
--
-- KEYS[1]  seckill:{S}:orders   the sale's stream
--
-- ARGV[1]  consumer group
-- ARGV[2]  stream entry id

redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
