"""The real pipeline through kfp.local with two HPO workers: ParallelFor runs them as two processes on one study."""

from __future__ import annotations

from pathlib import Path

import optuna
from mlflow import MlflowClient

from tests.integration.pipeline.conftest import Cli


def test_two_hpo_workers_share_the_study_of_the_run(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    # threshold 1.0 forces the HPO branch; logistic regression keeps each trial well under a second.
    result = cli(
        "run", "--threshold", "1.0", "--model-type", "logistic_regression", "--n-trials", "6", "--hpo-workers", "2",
        "--json", extra_env={"HYBRIDML_DAEMON": "0"}, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    tracking = f"sqlite:///{cli.home / 'mlflow.db'}"
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("hybridml")
    (hpo_run,) = client.search_runs([experiment.experiment_id], "tags.`hybridml.role` = 'hpo'")
    assert hpo_run.info.status == "FINISHED"
    assert hpo_run.data.params["workers"] == "2"
    # The CLI's default storage: SQLite beside the MLflow database, one study per pipeline run.
    storage = f"sqlite:///{cli.home / 'optuna.db'}"
    pipeline_run_id = hpo_run.data.tags["hybridml.pipeline_run_id"]
    study = optuna.load_study(study_name=f"hybridml-{pipeline_run_id}", storage=storage)
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert [t.number for t in trials] == list(range(6))  # exactly the budget, over both workers
    assert {t.user_attrs["worker"] for t in trials} == {0, 1}
    assert study.user_attrs == {"mlflow_run_id": hpo_run.info.run_id, "n_trials": 6}
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{hpo_run.info.run_id}'")
    assert sorted(int(r.info.run_name) for r in children) == list(range(6))  # every trial is an MLflow child run
    by_number = {t.number: str(t.user_attrs["worker"]) for t in trials}
    assert {int(r.info.run_name): r.data.tags["hybridml.hpo_worker"] for r in children} == by_number
    assert hpo_run.data.metrics["trials_worker_0"] + hpo_run.data.metrics["trials_worker_1"] == 6
    # The branch retrains with the study's best parameters.
    registered = client.get_model_version("hybridml-model", "1")
    assert registered.tags["branch"] == "hpo"
    assert client.get_run(registered.run_id).data.params["param.C"] == str(study.best_params["C"])
