"""The container image every component runs in on a cluster (built from the repository's Dockerfile)."""

IMAGE = "ghcr.io/hybridml/hybridml:0.1.0"
