"""The node's HTTP API (API.md): `create_app(services)` builds the aiohttp application."""
