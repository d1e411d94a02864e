"""The Lua scripts (one per file), shipped in the package as ``seckill.lua``."""
