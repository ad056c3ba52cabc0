"""Pure decisions and records: no I/O, no driver, no aiohttp; imports nothing of ours but the core."""
