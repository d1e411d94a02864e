"""The order pipeline and its sinks, against real backends."""
