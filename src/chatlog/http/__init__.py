"""The HTTP API on aiohttp."""
