"""The order pipeline: Redis Stream -> bounded queue -> workers -> sink."""
