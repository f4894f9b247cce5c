"""Step functions called directly (as a retried Kubeflow pod would): idempotent register, deploy guard."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridml.errors import ConflictError, InvalidInputError
from hybridml.steps import prepare, release, training


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, training.Trained, Path]:
    d = tmp_path_factory.mktemp("steps")
    uri = f"sqlite:///{d / 'mlflow.db'}"
    paths = {k: str(d / f"{k}.parquet") for k in ("train", "valid", "test")}
    prepare.preprocess(
        data_uri="",
        target="",
        seed=1,
        test_size=0.2,
        threshold=0.75,
        model_name="m",
        tracking_uri=uri,
        train_path=paths["train"],
        valid_path=paths["valid"],
        test_path=paths["test"],
        schema_path=str(d / "s.json"),
    )
    out = training.train(
        train_path=paths["train"],
        schema_path=str(d / "s.json"),
        model_type="xgboost",
        params_json='{"n_estimators": 20}',
        seed=1,
        tracking_uri=uri,
        experiment="steps",
        pipeline_run_id="run-1",
        run_name="train",
        model_dir=str(d / "model"),
    )
    return uri, out, d


def _register(trained: tuple[str, training.Trained, Path], run: str, roc_auc: float = 0.9) -> release.Registered:
    uri, out, _ = trained
    return release.register(
        model_name="m",
        model_uri=out.model_uri,
        run_id=out.run_id,
        roc_auc=roc_auc,
        data_hash="sha256:x",
        pipeline_run_id=run,
        branch="register",
        run_key=f"{run}/register",
        tracking_uri=uri,
    )


def test_a_retried_register_returns_the_same_version(trained: tuple[str, training.Trained, Path]) -> None:
    first = _register(trained, "run-1")
    assert _register(trained, "run-1").model_version == first.model_version
    assert _register(trained, "run-2").model_version == first.model_version + 1


def test_deploy_refuses_a_version_that_is_not_approved(trained: tuple[str, training.Trained, Path]) -> None:
    uri, _, d = trained
    version = _register(trained, "run-3").model_version
    with pytest.raises(ConflictError, match="is PendingManualApproval, only Approved versions are deployed"):
        release.deploy(
            model_name="m", version=version, target="local", traffic_percent=100, home=str(d), tracking_uri=uri
        )
    assert not (d / "deployments" / "m.json").exists()


@pytest.mark.parametrize("target", ["kserve", "sagemaker", "nowhere"])
def test_unbuilt_or_unknown_deploy_targets_say_so(target: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=f"deploy target '{target}'"):
        release.deploy_target(target, str(tmp_path))


def test_auto_approval_off_leaves_the_version_pending(trained: tuple[str, training.Trained, Path]) -> None:
    uri = trained[0]
    version = _register(trained, "run-4", roc_auc=0.95).model_version
    status = release.approve(
        model_name="m", version=version, threshold=0.75, tolerance=0.01, auto_approve=False, tracking_uri=uri
    )
    assert status == "PendingManualApproval"
    assert (
        release.approve(
            model_name="m", version=version, threshold=0.75, tolerance=0.01, auto_approve=True, tracking_uri=uri
        )
        == "Approved"
    )
