"""Step functions called directly (as a retried Kubeflow pod would): idempotent register, deploy guard, profile."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hybridml.core import data, model
from hybridml.core.profile import SCORE_EDGES, bin_shares
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
        test_path=paths["test"],
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


@pytest.mark.parametrize("target", ["nowhere"])  # sagemaker, kserve: their config tests
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


def test_the_trained_bundle_carries_the_reference_profile(trained: tuple[str, training.Trained, Path]) -> None:
    _, _, d = trained
    bundle = model.read_bundle(d / "model")
    profile = bundle.profile
    assert profile is not None
    assert (d / "model" / model.PROFILE_FILE).is_file()
    train_frame, schema = prepare.load_split(str(d / "train.parquet"), str(d / "s.json"))
    assert set(profile.numeric) == set(schema.names) and not profile.categorical
    # Feature shares are of the training split (not the whole table): recomputing them gives the same numbers.
    radius = profile.numeric["mean_radius"]
    assert radius.shares == bin_shares(train_frame["mean_radius"].tolist(), radius.edges)
    assert radius.edges[0] == train_frame["mean_radius"].min() and radius.edges[-1] == train_frame["mean_radius"].max()
    # Score shares are of this model's scores on the test split.
    test_frame = pd.read_parquet(d / "test.parquet")
    scores = model.positive_scores(model.load_estimator(bundle), data.encode_features(test_frame, schema))
    assert profile.scores.edges == SCORE_EDGES
    assert profile.scores.shares == bin_shares(scores.tolist(), SCORE_EDGES)
    assert math.isclose(sum(profile.scores.shares), 1.0)


def _preprocess(d: Path, csv: Path, **overrides: str) -> prepare.Prepared:
    arguments = {
        "data_uri": str(csv),
        "target": "label",
        "seed": 1,
        "test_size": 0.2,
        "threshold": 0.75,
        "model_name": "ids",
        "tracking_uri": "",
        "train_path": str(d / "train.parquet"),
        "valid_path": str(d / "valid.parquet"),
        "test_path": str(d / "test.parquet"),
        "schema_path": str(d / "schema.json"),
        **overrides,
    }
    return prepare.preprocess(**arguments)  # type: ignore[arg-type]


def test_preprocess_leaves_identifier_columns_out_of_the_splits(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "rownames": np.arange(1, 101),
            "name": [f"n{i}" for i in range(100)],
            "f1": rng.normal(size=100),
            "label": ["a", "b"] * 50,
        }
    )
    frame.to_csv(tmp_path / "t.csv", index=False)
    out = _preprocess(tmp_path, tmp_path / "t.csv", keep_columns='["name"]', positive_class="a")
    assert out.dropped == {"rownames": "row number: consecutive integers 1..100, one per row"}
    assert json.loads(out.dropped_json) == out.dropped
    assert out.n_features == 2
    for part in ("train", "valid", "test"):
        assert list(pd.read_parquet(tmp_path / f"{part}.parquet").columns) == ["name", "f1", "label"]
    schema = json.loads((tmp_path / "schema.json").read_text())
    assert schema["dropped"] == out.dropped
    assert schema["classes"] == ["b", "a"]


@pytest.mark.parametrize("name", ["My Model", "x" * 41, "9lives"])
def test_preprocess_checks_the_model_name_before_reading_data(tmp_path: Path, name: str) -> None:
    # The data file is absent: the name is refused first, as a cluster run (no CLI pre-flight) needs.
    with pytest.raises(InvalidInputError, match=rf"^invalid model name '{name}': use 1-40 characters of lower-case"):
        _preprocess(tmp_path, tmp_path / "absent.csv", model_name=name)
