"""Deployment targets: where approved model versions are served (local processes today)."""
