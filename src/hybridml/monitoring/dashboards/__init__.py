"""Grafana dashboards of hybridml, generated from Python (build.py) with grafana-foundation-sdk."""
