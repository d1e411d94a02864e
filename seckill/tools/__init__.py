"""Tools around the gateway: the launcher, ``make run``, the demo, the invariant
checks and the admin client."""
