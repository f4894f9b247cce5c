"""The HPO steps the pipeline's components call: plan, worker, best, with MLflow on SQLite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from hybridml.errors import InvalidInputError
from hybridml.steps import prepare, training


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("split")
    paths = {k: str(root / f"{k}.parquet") for k in ("train", "valid", "test")}
    prepare.preprocess(
        data_uri="", target="", seed=1, test_size=0.2, threshold=0.75, model_name="m",
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}", train_path=paths["train"], valid_path=paths["valid"],
        test_path=paths["test"], schema_path=str(root / "s.json"),
    )  # fmt: skip
    return {**paths, "schema": str(root / "s.json")}


def test_an_empty_storage_is_a_journal_file_under_the_home(tmp_path: Path) -> None:
    for memory in ("", "memory"):
        assert training.resolve_storage(memory, str(tmp_path), "hybridml-r1") == (
            f"journal:{tmp_path / 'hpo' / 'hybridml-r1.journal'}"
        )
    assert (tmp_path / "hpo").is_dir()
    given = "postgresql+psycopg2://optuna@db:5432/optuna"
    assert training.resolve_storage(given, str(tmp_path), "hybridml-r1") == given


@pytest.mark.parametrize("workers", [0, 65])
def test_the_plan_refuses_a_worker_count_out_of_range(workers: int, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as caught:
        training.plan_search(
            model_type="logistic_regression", n_trials=2, timeout_s=60, storage="", seed=1, workers=workers,
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="e", pipeline_run_id="r", home=str(tmp_path),
        )  # fmt: skip
    assert caught.value.message == f"hpo_workers must be between 1 and 64, got {workers}"


def test_plan_workers_and_best_share_one_study_and_one_hpo_run(split: dict[str, str], tmp_path: Path) -> None:
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = {"tracking_uri": tracking, "experiment": "fan"}
    planned = {
        "model_type": "logistic_regression", "n_trials": 3, "timeout_s": 60, "storage": "", "seed": 1, "workers": 2,
        "pipeline_run_id": "run-1", "home": str(tmp_path), **common,
    }  # fmt: skip
    plan = training.plan_search(**planned)  # type: ignore[arg-type]
    storage = f"journal:{tmp_path / 'hpo' / 'fan-run-1.journal'}"
    assert (plan.storage, plan.study_name) == (storage, "fan-run-1")
    assert plan.workers == [
        {"worker": w, "storage": storage, "study": "fan-run-1", "run_id": plan.run_id} for w in (0, 1)
    ]
    assert training.plan_search(**planned) == plan  # type: ignore[arg-type]  # a retried plan: same run, same queue
    worker = {
        "train_path": split["train"], "valid_path": split["valid"], "schema_path": split["schema"],
        "model_type": "logistic_regression", "seed": 1, "storage": storage, "study_name": "fan-run-1",
        "run_id": plan.run_id, "timeout_s": 60, **common,
    }  # fmt: skip
    ran = [training.search_worker(worker=w, **worker) for w in (0, 1)]  # type: ignore[arg-type]
    assert ran == [3, 0]  # one after the other here: the first takes the whole queue
    result = training.search_best(storage=storage, study_name="fan-run-1", run_id=plan.run_id, **common)
    assert (result.n_trials, result.n_pruned, result.n_failed, result.per_worker) == (3, 0, 0, {0: 3})
    assert result.run_id == plan.run_id
    assert set(json.loads(result.best_params_json)) == {"C"}  # max_iter is fixed, not searched
    assert 0.5 < result.best_value <= 1.0
    assert result.markdown() == (
        "## HPO\n\n- completed trials: 3\n- pruned trials: 0\n- failed trials: 0\n- trials per worker: worker 0: 3\n"
        f"- best validation ROC AUC: {result.best_value:.4f}\n- best params: `{result.best_params_json}`\n"
    )
    client = MlflowClient(tracking)
    run = client.get_run(plan.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["workers"] == "2"
    assert run.data.params["storage"] == storage
    assert run.data.params["best.C"] == str(json.loads(result.best_params_json)["C"])
    assert run.data.metrics["trials_complete"] == 3
    assert run.data.metrics["trials_worker_0"] == 3
    experiment = client.get_experiment_by_name("fan")
    trials = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{plan.run_id}'")
    assert sorted(r.info.run_name for r in trials) == ["0", "1", "2"]
    assert {(r.data.tags["hybridml.hpo_worker"], r.data.tags["hybridml.role"]) for r in trials} == {("0", "hpo-trial")}
    assert all("valid_roc_auc" in r.data.metrics for r in trials)
