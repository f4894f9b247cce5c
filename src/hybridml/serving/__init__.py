"""Serving a model bundle: strict validation, a lean KServe-protocol ASGI server, traffic router and HTTP client."""
