"""The SageMaker deploy target: ``model.tar.gz`` in S3, models, endpoint configs and real-time endpoints."""

from hybridml.adapters.aws import Clients, default_clients
from hybridml.deploy.sagemaker.packaging import Package, pack
from hybridml.deploy.sagemaker.target import SageMakerTarget, parse_scores

__all__ = ["Clients", "Package", "SageMakerTarget", "default_clients", "pack", "parse_scores"]
