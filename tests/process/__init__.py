"""Real `seckill serve` processes: start, stop, kill, several processes."""
