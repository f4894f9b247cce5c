"""MLflow tracking at the edges: a failed step leaves its runs FAILED; a stopped server ends `run` with exit 5, fast."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import pytest
from mlflow.entities import LoggedModelStatus

from hybridml.errors import InvalidInputError, NotReadyError
from hybridml.steps import prepare, training

if TYPE_CHECKING:  # fixtures' types only; conftest modules are not importable by name
    from conftest import Backend, Disposable

pytestmark = pytest.mark.integration

HYBRIDML = Path(sys.executable).with_name("hybridml")


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The built-in table split as the preprocess step splits it (no registry check)."""
    root = tmp_path_factory.mktemp("splits")
    paths = {part: str(root / f"{part}.parquet") for part in ("train", "valid", "test")}
    paths["schema"] = str(root / "schema.json")
    prepare.preprocess(
        data_uri="",
        target="",
        seed=1,
        test_size=0.2,
        threshold=0.75,
        model_name="",
        tracking_uri="",
        train_path=paths["train"],
        valid_path=paths["valid"],
        test_path=paths["test"],
        schema_path=paths["schema"],
    )
    return paths


def run_status(uri: str, run_id: str) -> str:
    return str(mlflow.MlflowClient(uri).get_run(run_id).info.status)


def test_a_train_step_that_fails_after_start_run_leaves_its_runs_failed(
    sqlite_backend: Backend, splits: dict[str, str], tmp_path: Path
) -> None:
    """The experiment's artifact store cannot be written: logging the model fails after the run started."""
    client = mlflow.MlflowClient(sqlite_backend.uri)
    client.create_experiment("broken-store", artifact_location="/dev/null/artifacts")  # not a directory
    with pytest.raises(NotADirectoryError):
        training.train(
            train_path=splits["train"],
            test_path=splits["test"],
            schema_path=splits["schema"],
            model_type="logistic_regression",
            params_json="",
            seed=1,
            tracking_uri=sqlite_backend.uri,
            experiment="broken-store",
            pipeline_run_id="p-broken",
            run_name="train",
            model_dir=str(tmp_path / "model"),
        )
    experiment = client.get_experiment_by_name("broken-store")
    runs = {r.data.tags["hybridml.role"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"pipeline", "train"}
    assert {role: r.info.status for role, r in runs.items()} == {"pipeline": "FAILED", "train": "FAILED"}
    assert runs["train"].data.tags["mlflow.parentRunId"] == runs["pipeline"].info.run_id
    (model,) = client.search_logged_models([experiment.experiment_id])
    assert model.status == LoggedModelStatus.FAILED  # the half-written model is not offered as usable


def test_an_evaluate_step_that_fails_leaves_the_train_run_failed(sqlite_backend: Backend, tmp_path: Path) -> None:
    client = mlflow.MlflowClient(sqlite_backend.uri)
    experiment_id = client.create_experiment("evaluate-fails", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(experiment_id, tags={"hybridml.role": "pipeline"}).info.run_id
    train_run = client.create_run(experiment_id, tags={"mlflow.parentRunId": parent}).info.run_id
    with pytest.raises(InvalidInputError):
        training.evaluate_model(
            model_dir=str(tmp_path / "no-model"),
            test_path=str(tmp_path / "no-test.parquet"),
            run_id=train_run,
            tracking_uri=sqlite_backend.uri,
            experiment="evaluate-fails",
        )
    assert (run_status(sqlite_backend.uri, train_run), run_status(sqlite_backend.uri, parent)) == ("FAILED", "FAILED")


def test_a_step_that_succeeds_leaves_its_run_as_it_was(sqlite_backend: Backend) -> None:
    from hybridml.adapters.tracking import Tracker

    tracker = Tracker(sqlite_backend.uri, "guard-ok")
    run_id = tracker.start_run("train", {})
    with tracker.guard(run_id):
        tracker.log(run_id, params={"a": 1})
    assert run_status(sqlite_backend.uri, run_id) == "RUNNING"
    tracker.end_run(run_id)
    assert run_status(sqlite_backend.uri, run_id) == "FINISHED"


def started(home: Path, step: str) -> bool:
    for events in home.glob("runs/*/events.jsonl"):
        for line in events.read_text().splitlines():
            if line.strip() and json.loads(line) == {**json.loads(line), "step": step, "event": "start"}:
                return True
    return False


def test_run_stops_with_exit_5_within_30_s_when_mlflow_stops_mid_run(
    disposable_server: Disposable, tmp_path: Path
) -> None:
    """`hybridml run` against an MLflow server that is killed once the train step has started."""
    url = disposable_server.backend.uri
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYBRIDML_"))}
    env["MLFLOW_TRACKING_URI"] = url
    env["HYBRIDML_DAEMON"] = "0"  # no background process outliving this test's home
    run = subprocess.Popen(
        [str(HYBRIDML), "--home", str(home), "run", "--json", "--model-name", "down-mid-run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 240
        while not started(home, "train"):
            assert run.poll() is None, f"run ended before the train step started: {run.communicate()}"
            assert time.monotonic() < deadline, "the train step did not start within 240 s"
            time.sleep(0.05)
        process = disposable_server.service.process
        assert process is not None
        os.killpg(process.pid, signal.SIGKILL)  # the server dies; it does not shut down politely
        killed = time.monotonic()
        stdout, stderr = run.communicate(timeout=60)
        elapsed = time.monotonic() - killed
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == NotReadyError.exit_code == 5, stderr
    assert elapsed < 30, f"took {elapsed:.1f} s after the server stopped"
    assert stdout == ""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: step '")
    assert f"MLflow at {url} is not reachable (connection refused)" in lines[0]
