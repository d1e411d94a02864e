"""The tools: the launcher, the demo, the invariant checks."""
