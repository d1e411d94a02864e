"""The HTTP API through pytest-aiohttp's client, against a real Redis."""
