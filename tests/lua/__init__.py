"""The Lua scripts called directly against a real Redis."""
