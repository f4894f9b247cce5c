"""Every setting and environment variable hybridml reads, declared once; read only at the edges."""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# name -> (meaning, default). The CLI's --help and the README list these.
ENV_VARS: dict[str, tuple[str, str]] = {
    "HYBRIDML_HOME": ("directory holding all state of the embedded defaults", "./.hybridml"),
    "MLFLOW_TRACKING_URI": ("MLflow tracking + registry URI", "sqlite:///$HYBRIDML_HOME/mlflow.db"),
    "HYBRIDML_EXPERIMENT": ("MLflow experiment that pipeline runs log to", "hybridml"),
    "HYBRIDML_USER": ("who is recorded in approval and alias history", "the login name"),
    "HYBRIDML_RUN_LOG": ("JSON-lines file where pipeline steps report progress and errors (set by the CLI)", ""),
    "HYBRIDML_ZYGOTE": ("0 runs local steps as plain subprocesses instead of forks of a warm interpreter", "1"),
    "HYBRIDML_DAEMON": ("0 runs every command in-process instead of in this home's warm background process", "1"),
    "HYBRIDML_DAEMON_IDLE_S": ("seconds the background process waits with no command running before it stops", "900"),
    "HYBRIDML_CONTROL_TOKEN": (
        "bearer token for the model server's control and feedback calls from off loopback (or --control-token-file)",
        "none: control answers loopback clients only",
    ),
    "HYBRIDML_ALLOW_POD_LOCAL_STATE": (
        "1: in a Kubernetes pod, accept MLflow/Optuna files and the local target (a volume shared by every step)",
        "refused in a pod: such state ends with the pod",
    ),
    "HYBRIDML_MODEL_NAME": ("model label of the predictor in SageMaker mode (`serve`; set in CreateModel)", "model"),
    "HYBRIDML_MODEL_VERSION": ("version label of the predictor in SageMaker mode (`serve`)", "empty"),
    "SM_MODEL_DIR": ("bundle directory of the predictor in SageMaker mode", "/opt/ml/model"),
    "SAGEMAKER_BIND_TO_PORT": ("port SageMaker asks the predictor to listen on in SageMaker mode", "8080"),
    # MLflow reads these itself; hybridml sets them (unless set) so a stopped tracking server is noticed in seconds.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": ("retries of one MLflow REST call", "2 (MLflow's own default: 7)"),
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": ("backoff factor between those retries", "1 (MLflow's: 2)"),
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": ("random extra backoff, seconds", "0.5"),
    "MLFLOW_HTTP_REQUEST_TIMEOUT": ("seconds one MLflow REST call may take", "8 (MLflow's: 120)"),
}


@dataclass(frozen=True)
class Settings:
    """Resolved settings of one process. Build with :meth:`from_env` at the entry point and pass inward."""

    home: Path
    tracking_uri: str
    experiment: str
    user: str
    warm_steps: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, home: str | Path | None = None) -> Settings:
        """Resolve from ``env`` (default: ``os.environ``); an explicit ``home`` wins over ``HYBRIDML_HOME``."""
        env = os.environ if env is None else env
        root = Path(home or env.get("HYBRIDML_HOME") or ".hybridml").expanduser().resolve()
        tracking = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"
        user = env.get("HYBRIDML_USER") or _login_name()
        return cls(
            home=root,
            tracking_uri=tracking,
            experiment=env.get("HYBRIDML_EXPERIMENT") or "hybridml",
            user=user,
            warm_steps=env.get("HYBRIDML_ZYGOTE", "1") != "0",
        )

    @property
    def deployments_dir(self) -> Path:
        """State of local deployments (one JSON file and log per endpoint)."""
        return self.home / "deployments"

    @property
    def runs_dir(self) -> Path:
        """Per-run folders: KFP local pipeline root, progress log, summary."""
        return self.home / "runs"

    @property
    def hpo_storage(self) -> str:
        """Default Optuna storage: a SQLite file beside the MLflow database."""
        return f"sqlite:///{self.home / 'optuna.db'}"


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, e.g. an arbitrary UID in a container
        return f"uid-{os.getuid()}"
