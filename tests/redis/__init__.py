"""The Redis layer: the auto-pipeline, against a real server."""
