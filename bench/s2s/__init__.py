"""The service-to-service client against bare httpx and aiohttp (`python -m bench.s2s`)."""
