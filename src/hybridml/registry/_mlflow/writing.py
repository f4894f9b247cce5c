"""Writing a bundle as an MLflow logged model in safe formats (XGBoost JSON, scikit-learn skops; never pickle)."""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
import tempfile
from pathlib import Path

from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.models import Model

from hybridml.adapters.mlflow_client import is_backend_error
from hybridml.core.model import (
    MANIFEST,
    PROFILE_FILE,
    XGBOOST,
    Bundle,
    load_estimator,
    read_bundle,
    trusted_skops_types,
)
from hybridml.registry._mlflow.backend import Backend, tag_value

_log = logging.getLogger(__name__)


def log_bundle(b: Backend, run_id: str, bundle: Bundle) -> str:
    """Log ``bundle`` as an MLflow model of run ``run_id``; return its ``models:/m-...`` URI.

    The model directory holds MLflow's flavor files (XGBoost JSON or scikit-learn skops, never pickle) plus
    the bundle's manifest, so a downloaded copy is itself a valid bundle. Works whether or not ``run_id``
    is the active run: only the client API is used, no global MLflow state.
    """
    run = b.call(lambda: b.client.get_run(run_id), f"run {run_id!r}")
    # Vets every type in the model file against core's allow-list before anything is written to MLflow.
    estimator = load_estimator(bundle)
    logged = b.call(
        lambda: b.client.create_logged_model(
            experiment_id=run.info.experiment_id,
            name="model",
            source_run_id=run_id,
            params={k: tag_value(v) for k, v in bundle.params.items()},
            tags={"hybridml.model_type": bundle.model_type},
        ),
        f"logged model of run {run_id!r}",
    )
    model_id = logged.model_id
    try:
        with tempfile.TemporaryDirectory(prefix="hybridml-log-") as tmp:
            local = Path(tmp) / "model"
            mlflow_model = Model(
                artifact_path=logged.artifact_location, model_uuid=model_id, run_id=run_id, model_id=model_id
            )
            if bundle.model_type == XGBOOST:
                import mlflow.xgboost

                mlflow.xgboost.save_model(
                    estimator,
                    str(local),
                    mlflow_model=mlflow_model,
                    model_format="json",
                    pip_requirements=requirements(bundle.model_type),
                )
            else:
                import mlflow.sklearn

                mlflow.sklearn.save_model(
                    estimator,
                    str(local),
                    mlflow_model=mlflow_model,
                    serialization_format="skops",
                    # MLflow stores these as the types to trust when it loads the model: only allow-listed ones.
                    skops_trusted_types=trusted_skops_types(bundle.path / bundle.model_file, bundle.model_type),
                    pip_requirements=requirements(bundle.model_type),
                )
            # The manifest names the same file name MLflow just wrote (model.json / model.skops).
            shutil.copyfile(bundle.path / MANIFEST, local / MANIFEST)
            for extra in _extra_files(bundle):
                shutil.copyfile(bundle.path / extra, local / extra)
            read_bundle(local)
            b.call(lambda: b.client.log_model_artifacts(model_id, str(local)), f"model {model_id}")
        b.call(lambda: b.client.log_outputs(run_id, [LoggedModelOutput(model_id, step=0)]), f"run {run_id!r}")
    except BaseException:
        # A half-written model must not look usable.
        try:
            b.client.finalize_logged_model(model_id, LoggedModelStatus.FAILED)
        except Exception as exc:
            if not is_backend_error(exc):
                raise
            _log.warning("could not mark logged model %s as failed", model_id)
        raise
    b.call(lambda: b.client.finalize_logged_model(model_id, LoggedModelStatus.READY), f"model {model_id}")
    return f"models:/{model_id}"


def _extra_files(bundle: Bundle) -> list[str]:
    """Bundle files besides the model and manifest that travel with it: the reference profile, if any."""
    return [PROFILE_FILE] if (bundle.path / PROFILE_FILE).is_file() else []


def requirements(model_type: str) -> list[str]:
    """Pinned requirements of the logged model, given explicitly: MLflow's inference costs seconds per model."""
    pins = []
    for dists in (("xgboost-cpu", "xgboost"), ("scikit-learn",), ("skops",), ("numpy",)):
        if dists[0] == "skops" and model_type == XGBOOST:
            continue
        for dist in dists:
            try:
                pins.append(f"{dist}=={importlib.metadata.version(dist)}")
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return pins
