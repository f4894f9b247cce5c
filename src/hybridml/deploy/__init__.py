"""Deployment targets behind one contract: a model goes in by reference, one factory picks the target.

``local`` (server processes on this machine) is built; ``kserve`` and ``sagemaker`` plug in behind the same
:class:`DeployTarget` contract and its test suite (tests/contract) by adding a config class and a factory case.
"""

from hybridml.deploy.config import KServeConfig, LocalConfig, TargetConfig, config_from, parse_config, read_config_file
from hybridml.deploy.contract import Deployment, DeployTarget, ModelRef, check_traffic_percent
from hybridml.deploy.factory import make_target
from hybridml.deploy.fetch import Fetch, fetch_artifact, mlflow_fetch, model_ref

__all__ = [
    "DeployTarget",
    "Deployment",
    "Fetch",
    "KServeConfig",
    "LocalConfig",
    "ModelRef",
    "TargetConfig",
    "check_traffic_percent",
    "config_from",
    "fetch_artifact",
    "make_target",
    "mlflow_fetch",
    "model_ref",
    "parse_config",
    "read_config_file",
]
