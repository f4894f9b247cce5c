"""Columns a user did not mean as features, and the positive class, through `hybridml run` and the registry."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.artifacts
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from hybridml.core import data, model
from hybridml.core.model import Bundle

from .conftest import Cli

ROW_NUMBER = "row number: consecutive integers 1..300, one per row"
UNIQUE_TEXT = "identifier: text unique per row (300 rows, each with a different value)"


@pytest.fixture(scope="module")
def table(cli: Cli) -> tuple[Path, pd.DataFrame]:
    """300 rows: a row number, a unique name, two useful numbers, a text category and a 0/1 label driven by f2."""
    rng = np.random.default_rng(11)
    n = 300
    f2 = rng.normal(size=n)
    frame = pd.DataFrame(
        {
            "rownames": np.arange(1, n + 1),
            "name": [f"passenger {i}" for i in rng.permutation(n)],
            "f1": rng.normal(size=n),
            "f2": f2,
            "cat": rng.choice(["a", "b", "c"], size=n),
            "label": (f2 + 0.3 * rng.normal(size=n) > 0).astype(int),
        }
    )
    path = cli.home / "ids.csv"
    frame.to_csv(path, index=False)
    return path, frame


def _registered(cli: Cli, name: str, version: object, dst: Path) -> Bundle:
    """The registered version as MLflow holds it: what a deploy or a drift monitor downloads."""
    uri = f"sqlite:///{cli.home / 'mlflow.db'}"
    location = MlflowClient(tracking_uri=uri).get_model_version_download_uri(name, str(version))
    local = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(dst), tracking_uri=uri)
    return model.read_bundle(local)


def test_identifiers_are_dropped_named_and_the_profile_reaches_the_registry(
    cli: Cli, table: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    path, _ = table
    result = cli("run", "--data", str(path), "--target", "label", "--model-name", "ids", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["dropped"] == {"rownames": ROW_NUMBER, "name": UNIQUE_TEXT}
    # The warning reaches the user on stderr, one line naming both columns and the way to keep one.
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: columns left out, they look like identifiers: rownames ({ROW_NUMBER}); name ({UNIQUE_TEXT});"
        " --keep COL keeps one"
    ]
    bundle = _registered(cli, "ids", summary["model_version"], tmp_path)
    assert bundle.schema.names == ["f1", "f2", "cat"]  # the float features survive
    assert bundle.schema.dropped == summary["dropped"]
    assert bundle.schema.classes == ("0", "1")
    profile = bundle.profile
    assert profile is not None
    assert set(profile.numeric) == {"f1", "f2"} and set(profile.categorical) == {"cat"}
    assert abs(sum(profile.scores.shares) - 1.0) < 1e-9
    # Shares are of the training split: 60% of 300 rows, so each category share is a multiple of 1/180.
    assert all(abs(s * 180 - round(s * 180)) < 1e-9 for s in profile.categorical["cat"].shares.values())


def test_keep_drop_and_positive_class_flags(cli: Cli, table: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    path, frame = table
    common = ("run", "--data", str(path), "--target", "label", "--json")
    result = cli(*common, "--model-name", "ids-flipped", "--keep", "name", "--drop", "f1", "--positive-class", "0")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["dropped"] == {"rownames": ROW_NUMBER, "f1": "dropped on request"}
    assert f"rownames ({ROW_NUMBER})" in result.stderr and "f1" not in result.stderr  # no warning for a request
    flipped = _registered(cli, "ids-flipped", summary["model_version"], tmp_path / "flipped")
    assert flipped.schema.names == ["name", "f2", "cat"]
    assert flipped.schema.classes == ("1", "0")
    assert np.array_equal(data.encode_labels(frame, flipped.schema), (frame["label"] == 0).to_numpy(dtype=np.int32))
    # Label 0 is now the positive class: the model scores high where f2 is low.
    scores = model.positive_scores(model.load_estimator(flipped), data.encode_features(frame, flipped.schema))
    assert np.corrcoef(scores, frame["f2"])[0, 1] < -0.5
    assert float(summary["roc_auc"]) > 0.8  # ROC of the flipped labels against the flipped scores


def test_a_positive_class_that_is_not_a_label_is_refused_naming_both(
    cli: Cli, table: tuple[Path, pd.DataFrame]
) -> None:
    path, _ = table
    runs = sorted((cli.home / "runs").iterdir()) if (cli.home / "runs").exists() else []
    result = cli("run", "--data", str(path), "--target", "label", "--model-name", "ids-bad", "--positive-class", "yes")
    assert result.returncode == 2
    # Found by run's pre-flight from the label column alone, before any step (preprocess checks it again).
    assert result.stderr.strip().splitlines() == [
        "error: positive class 'yes' is not a class of target column 'label': choose '0' or '1'"
    ]
    assert (sorted((cli.home / "runs").iterdir()) if (cli.home / "runs").exists() else []) == runs


def test_a_model_name_that_breaks_the_rule_is_refused_before_the_pipeline_starts(cli: Cli) -> None:
    runs = cli.home / "runs"
    before = sorted(runs.iterdir()) if runs.is_dir() else []
    result = cli("run", "--model-name", "My Model")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: invalid model name 'My Model': use 1-40 characters of lower-case letters, digits and '-', starting"
        " with a letter and ending with a letter or digit (it becomes a Kubernetes object name and a SageMaker"
        " endpoint name)"
    ]
    assert (sorted(runs.iterdir()) if runs.is_dir() else []) == before  # no run folder: nothing started
