"""The KServe deploy target: InferenceServices (``serving.kserve.io/v1beta1``) by server-side apply."""

from hybridml.deploy.kserve.target import KServeTarget, load_api_client

__all__ = ["KServeTarget", "load_api_client"]
