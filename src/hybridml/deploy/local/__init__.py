"""The local deploy target: model server processes on this machine (state, processes, control by role)."""

from hybridml.deploy.local.target import LocalTarget

__all__ = ["LocalTarget"]
