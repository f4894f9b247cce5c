"""HPO on durable storage: a study in PostgreSQL (the cluster's choice) and SQLite, resumed by a retried step."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from hybridml.core import hpo


def _objective(calls: list[int]) -> hpo.Objective:
    def objective(trial: optuna.Trial) -> float:
        calls.append(trial.number)
        return trial.suggest_float("x", 0.0, 1.0)

    return objective


def _retried_step(storage: str) -> None:
    """The first attempt dies after 3 of 8 trials; the retry runs the 5 still owed, numbered 3-7."""
    first: list[int] = []

    def dies_after_three(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.number == 2:
            raise KeyboardInterrupt  # what a killed pod looks like to the study: it stops mid-search

    with pytest.raises(KeyboardInterrupt):
        hpo.optimize(
            _objective(first), n_trials=8, timeout_s=None, storage=storage, study_name="s", callbacks=[dies_after_three]
        )
    assert first == [0, 1, 2]
    second: list[int] = []
    study = hpo.optimize(_objective(second), n_trials=8, timeout_s=None, storage=storage, study_name="s")
    assert second == [3, 4, 5, 6, 7]
    assert len(study.trials) == 8
    # Run again once finished: nothing is owed, nothing runs.
    third: list[int] = []
    assert len(hpo.optimize(_objective(third), n_trials=8, timeout_s=None, storage=storage, study_name="s").trials) == 8
    assert third == []


def test_retried_step_resumes_on_postgresql(postgres_uri: str) -> None:
    _retried_step(postgres_uri)
    stored = optuna.load_study(study_name="s", storage=postgres_uri)
    assert [t.number for t in stored.trials] == list(range(8))


def test_retried_step_resumes_on_sqlite(tmp_path: Path) -> None:
    _retried_step(f"sqlite:///{tmp_path / 'optuna.db'}")


def test_in_memory_study_starts_over() -> None:
    calls: list[int] = []
    hpo.optimize(_objective(calls), n_trials=3, timeout_s=None, storage="", study_name="s")
    hpo.optimize(_objective(calls), n_trials=3, timeout_s=None, storage="", study_name="s")
    assert calls == [0, 1, 2, 0, 1, 2]


def test_the_hpo_step_never_records_the_storage_password(postgres_uri: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from hybridml.steps import prepare, training

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    paths = {k: str(tmp_path / f"{k}.parquet") for k in ("train", "valid", "test")}
    prepare.preprocess(
        data_uri="", target="", seed=1, test_size=0.2, threshold=0.75, model_name="m", tracking_uri=tracking,
        train_path=paths["train"], valid_path=paths["valid"], test_path=paths["test"],
        schema_path=str(tmp_path / "s.json"),
    )  # fmt: skip
    # The test server trusts local connections, so the password is accepted and ignored: only its echo matters.
    with_password = postgres_uri.replace("postgres@", "postgres:s3cret-pw@")
    plan = training.plan_search(
        model_type="logistic_regression",
        n_trials=2,
        timeout_s=60,
        storage=with_password,
        seed=1,
        workers=1,
        tracking_uri=tracking,
        experiment="hpo-secrets",
        pipeline_run_id="p1",
        home=str(tmp_path),
    )
    training.search_worker(
        train_path=paths["train"],
        valid_path=paths["valid"],
        schema_path=str(tmp_path / "s.json"),
        model_type="logistic_regression",
        seed=1,
        worker=0,
        storage=plan.storage,
        study_name=plan.study_name,
        run_id=plan.run_id,
        timeout_s=60,
        tracking_uri=tracking,
        experiment="hpo-secrets",
    )
    result = training.search_best(
        storage=plan.storage, study_name=plan.study_name, run_id=plan.run_id, tracking_uri=tracking,
        experiment="hpo-secrets",
    )  # fmt: skip
    params = MlflowClient(tracking).get_run(result.run_id).data.params
    assert params["storage"] == with_password.replace("s3cret-pw", "***")
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("hpo-secrets")
    for run in client.search_runs([experiment.experiment_id]):
        assert "s3cret-pw" not in json.dumps([run.data.params, run.data.tags])
