"""Bad input ends with one clear line and a non-zero exit, no downstream step runs, the registry is unchanged."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from hybridml.core import data

from .conftest import Cli

Make = Callable[[Path], list[str]]


def _csv(path: Path, frame: pd.DataFrame, name: str = "bad.csv") -> Path:
    target = path / name
    frame.to_csv(target, index=False)
    return target


def _cancer() -> pd.DataFrame:
    return data.builtin_breast_cancer()[0]


CASES: dict[str, tuple[Make, str]] = {
    "missing file": (lambda d: ["run", "--data", str(d / "nope.csv"), "--target", "y"], "data file not found"),
    "missing target column": (
        lambda d: ["run", "--data", str(_csv(d, _cancer())), "--target", "label"],
        "target column 'label' not found",
    ),
    "non-binary target": (
        lambda d: ["run", "--data", str(_csv(d, _cancer().assign(target=np.arange(569) % 3))), "--target", "target"],
        "must have exactly 2 classes, found 3",
    ),
    "empty table": (
        lambda d: ["run", "--data", str(_csv(d, _cancer().iloc[:0])), "--target", "target"],
        "has no rows",
    ),
    "column of only NaN": (
        lambda d: ["run", "--data", str(_csv(d, _cancer().assign(mean_radius=np.nan))), "--target", "target"],
        "column 'mean_radius' contains only missing values",
    ),
    "schema differs from the registered model": (
        lambda d: ["run", "--data", str(_csv(d, _cancer().drop(columns=["mean_area"]))), "--target", "target"],
        "does not match the schema of hybridml-model version 1: missing columns ['mean_area']",
    ),
    "column to drop is not in the table": (
        lambda d: ["run", "--drop", "mean_radius", "--drop", "nope"],
        "column 'nope' to drop is not in the table (columns: mean_radius, mean_texture,",
    ),
    "data over http": (
        lambda d: ["run", "--data", "https://example.com/table.csv", "--target", "y"],
        "cannot read data from 'https://example.com/table.csv': http(s) URIs are not supported",
    ),
    "positive class that is not a class": (
        lambda d: ["run", "--data", str(_csv(d, _cancer())), "--target", "target", "--positive-class", "2"],
        "positive class '2' is not a class of target column 'target': choose '0' or '1'",
    ),
    "threshold above 1": (lambda d: ["run", "--threshold", "1.5"], "threshold must be between 0 and 1, got 1.5"),
    "threshold below 0": (lambda d: ["run", "--threshold", "-0.1"], "threshold must be between 0 and 1, got -0.1"),
    "approve a non-existent version": (
        lambda d: ["models", "approve", "hybridml-model", "99", "--reason", "x"],
        "has no version 99",
    ),
    "approve a non-existent model": (
        lambda d: ["models", "approve", "no-such-model", "1", "--reason", "x"],
        "no-such-model",
    ),
    "approve expecting a status another reviewer changed": (
        lambda d: ["models", "approve", "hybridml-model", "1", "--reason", "x", "--expect", "PendingManualApproval"],
        "version 1 is Approved, not PendingManualApproval",
    ),
    "show a non-existent model": (lambda d: ["models", "show", "no-such-model/1"], "no-such-model"),
}


def _snapshot(cli: Cli) -> tuple[int, dict[str, str], list[str]]:
    # Read the registry in-process (a CLI call per snapshot would triple the cost of every case).
    client = MlflowClient(tracking_uri=f"sqlite:///{cli.home / 'mlflow.db'}")
    versions = client.search_model_versions("name = 'hybridml-model'")
    return (
        len(versions),
        dict(client.get_registered_model("hybridml-model").aliases),
        sorted(f"{v.version}:{v.tags.get('approval_status')}" for v in versions),
    )


# Found by `run`'s pre-flight from the arguments, the header and the label column: no step may start.
PREFLIGHT = {
    "missing file",
    "missing target column",
    "non-binary target",
    "empty table",
    "column to drop is not in the table",
    "data over http",
    "positive class that is not a class",
    "threshold above 1",
    "threshold below 0",
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_changes_nothing(
    cli: Cli, first_run: dict[str, object], tmp_path: Path, case: str
) -> None:
    make, message = CASES[case]
    before = _snapshot(cli)
    runs_before = sorted((cli.home / "runs").iterdir())
    result = cli(*make(tmp_path))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert message in lines[0]
    assert _snapshot(cli) == before
    if case in PREFLIGHT:  # refused before any pipeline machinery: no run folder, so no step and no MLflow run
        assert sorted((cli.home / "runs").iterdir()) == runs_before
    # No step after the failing one ran: a failed run leaves no summary and only its own start/error events.
    for run_dir in sorted((cli.home / "runs").iterdir()):
        if run_dir in runs_before:
            continue
        assert not (run_dir / "summary.json").exists()
        events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
        assert [e["step"] for e in events] == ["preprocess", "preprocess"]
        assert events[-1]["event"] == "error"


def test_in_a_kubeflow_pod_the_defaults_stop_at_the_first_step_and_change_nothing(
    cli: Cli, first_run: dict[str, object]
) -> None:
    """The committed pipeline's embedded defaults, in the environment a Kubeflow executor pod has (issue 13)."""
    before = _snapshot(cli)
    runs_before = sorted((cli.home / "runs").iterdir())
    result = cli("run", extra_env={"KFP_POD_NAME": "hybridml-training-x7k2p-preprocess"})
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: step 'preprocess' failed: this step runs in a Kubernetes pod, whose disk is its own")
    assert "set the pipeline parameter tracking_uri to your MLflow server" in line
    assert _snapshot(cli) == before
    (run_dir,) = [d for d in sorted((cli.home / "runs").iterdir()) if d not in runs_before]
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [(e["step"], e["event"]) for e in events] == [("preprocess", "start"), ("preprocess", "error")]
    assert not any(p.suffix == ".parquet" for p in run_dir.rglob("*"))  # refused before the splits were written
