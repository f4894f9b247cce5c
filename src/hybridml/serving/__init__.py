"""Serving a model bundle: strict input validation, the KServe model server and an HTTP client."""
