"""seckill — a flash-sale gateway in front of a shop's order backend."""

__version__ = "0.1.0"
