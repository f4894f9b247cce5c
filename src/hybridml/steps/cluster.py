"""In a Kubernetes pod, refuse state that would vanish with the pod: local MLflow/Optuna files, the local target."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

from hybridml.core.secrets import redact
from hybridml.errors import InvalidInputError

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
ALLOW_ENV = "HYBRIDML_ALLOW_POD_LOCAL_STATE"
# Schemes whose data lives on the step's own disk (an empty URI is the default SQLite file, or Optuna's memory).
_POD_LOCAL = ("", "sqlite", "file")


def in_cluster_pod(env: Mapping[str, str] | None = None, token: Path = SERVICE_ACCOUNT_TOKEN) -> bool:
    """Whether this step runs in a Kubernetes pod, where each step's disk is its own and ends with it.

    A Kubeflow executor pod sets ``KFP_POD_NAME``. Any pod has ``KUBERNETES_SERVICE_HOST`` and, usually, the
    service account's token; there, the local runner (which sets ``HYBRIDML_RUN_LOG``: a notebook running
    ``hybridml run``, every step on one disk) is not refused. ``HYBRIDML_ALLOW_POD_LOCAL_STATE=1`` turns the check
    off, for a volume shared by every step mounted at ``HYBRIDML_HOME``.
    """
    env = os.environ if env is None else env
    if env.get(ALLOW_ENV) == "1":
        return False
    if env.get("KFP_POD_NAME"):
        return True
    return bool(env.get("KUBERNETES_SERVICE_HOST")) and not env.get("HYBRIDML_RUN_LOG") and token.exists()


def effective_target(deploy_target: str, deploy_config: str) -> str:
    """The target a run deploys to: ``deploy_target``, else the ``target`` of ``deploy_config``, else ``local``."""
    if deploy_target:
        return deploy_target
    from hybridml.deploy.config import parse_config

    return str(parse_config(deploy_config, "deploy_config").get("target") or "local")


def _pod_local(uri: str) -> bool:
    return urlparse(uri).scheme.lower() in _POD_LOCAL


def check_durable(
    *,
    tracking_uri: str | None = None,
    hpo_storage: str | None = None,
    deploy_target: str | None = None,
    env: Mapping[str, str] | None = None,
    token: Path = SERVICE_ACCOUNT_TOKEN,
) -> None:
    """Refuse, in a pod, each given setting whose state would be lost with the pod (None: not checked).

    Raises:
        InvalidInputError: one line naming the pipeline parameter to set, for the first such setting.
    """
    if not in_cluster_pod(env, token):
        return
    why = "this step runs in a Kubernetes pod, whose disk is its own and ends with it"
    if tracking_uri is not None and _pod_local(tracking_uri):
        raise InvalidInputError(
            f"{why}: the MLflow store {redact(tracking_uri) or '(default SQLite file)'!r} would be a new, empty one"
            " in every step; set the pipeline parameter tracking_uri to your MLflow server"
            " (for example http://mlflow.hybridml.svc.cluster.local:5000)"
        )
    if hpo_storage is not None and _pod_local(hpo_storage):
        raise InvalidInputError(
            f"{why}: the Optuna storage {redact(hpo_storage) or '(in memory)'!r} would lose the study when the HPO"
            " step is retried; set the pipeline parameter hpo_storage to a shared database"
            " (for example postgresql+psycopg2://USER@HOST/optuna)"
        )
    if deploy_target is not None and deploy_target in ("", "local"):
        raise InvalidInputError(
            f"{why}: the local deploy target would start the model server inside this step and stop it with the"
            " pod; set the pipeline parameter deploy_target to kserve or sagemaker"
        )
