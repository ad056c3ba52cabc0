"""The web layer: the aiohttp app factory, its middlewares, access rules and thin handlers."""
