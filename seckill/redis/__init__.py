"""Everything that talks to Redis: key names, the Lua scripts, the clients, events, peers."""
