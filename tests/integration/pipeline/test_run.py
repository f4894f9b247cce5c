"""The real pipeline through kfp.local: both branches, registry, approval, deploy and inference over loopback."""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient

from hybridml.core import data

from .conftest import Cli

SUMMARY_KEYS = {"roc_auc", "branch", "model_name", "model_version", "approval_status", "endpoint", "prediction"}


def _state(cli: Cli, name: str = "hybridml-model") -> tuple[int, dict[str, int]]:
    versions = cli.json("models", "show", name)
    assert isinstance(versions, list)
    champions = {a: v["version"] for v in versions for a in v["aliases"]}
    return len(versions), champions


def test_direct_branch_ends_with_a_live_endpoint(cli: Cli, first_run: dict[str, object]) -> None:
    assert set(first_run) >= SUMMARY_KEYS
    assert first_run["branch"] == "register"
    assert float(first_run["roc_auc"]) >= 0.75  # type: ignore[arg-type]
    assert first_run["model_version"] == 1
    assert first_run["approval_status"] == "Approved"
    assert 0.0 <= float(first_run["prediction"]) <= 1.0  # type: ignore[arg-type]
    # The endpoint is a real KServe-protocol server; predict through the CLI with held-out style rows.
    frame, target = data.builtin_breast_cancer()
    rows = Path(cli.home) / "rows.csv"
    frame.head(3).to_csv(rows, index=False)
    answer = cli.json("predict", str(rows), "--model", "hybridml-model", "--drop", target)
    assert isinstance(answer, dict)
    assert len(answer["predictions"]) == 3
    assert answer["endpoint"] == first_run["endpoint"]


def test_mlflow_holds_runs_plots_versions_and_tags(cli: Cli, first_run: dict[str, object]) -> None:
    client = MlflowClient(tracking_uri=f"sqlite:///{cli.home / 'mlflow.db'}")
    version = client.get_model_version("hybridml-model", str(first_run["model_version"]))
    tags = version.tags
    assert tags["approval_status"] == "Approved"  # SageMaker's ModelApprovalStatus values
    assert tags["data_hash"].startswith("sha256:")
    assert float(tags["roc_auc"]) == float(first_run["roc_auc"])  # type: ignore[arg-type]
    assert tags["pipeline_run_id"] and tags["code_version"].startswith("0.1.0")
    run = client.get_run(version.run_id)
    assert run.data.metrics["roc_auc"] > 0.9
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/roc_curve.png" in artifacts
    assert (cli.home / "mlartifacts").is_dir()  # artifacts live under the home, not ./mlruns
    # The run's MLflow runs (its parent included) are all over when it is: none is left RUNNING.
    experiment = client.get_experiment_by_name("hybridml")
    mine = client.search_runs(
        [experiment.experiment_id], f"tags.`hybridml.pipeline_run_id` = '{tags['pipeline_run_id']}'"
    )
    assert {r.data.tags["hybridml.role"] for r in mine} >= {"pipeline", "train"}
    assert {r.data.tags["hybridml.role"]: r.info.status for r in mine} == dict.fromkeys(
        {r.data.tags["hybridml.role"] for r in mine}, "FINISHED"
    )


def test_second_run_registers_a_new_version_and_history_tells_who_and_why(
    cli: Cli, first_run: dict[str, object]
) -> None:
    second = cli.json("run")
    assert isinstance(second, dict)
    assert second["model_version"] == int(first_run["model_version"]) + 1  # type: ignore[call-overload]
    count, aliases = _state(cli)
    assert count == 2
    assert aliases["champion"] == second["model_version"]  # moved by the policy's approval
    history = cli.json("models", "history", "hybridml-model")
    assert isinstance(history, list)
    actions = [(e["action"], e["version"]) for e in history]
    assert ("registered", 1) in actions and ("registered", 2) in actions
    approvals = [e for e in history if e["action"] == "status" and "Approved" in e["detail"]]
    assert {e["version"] for e in approvals} == {1, 2}
    assert all(e["actor"] and e["reason"] and e["at"] for e in approvals)
    alias_moves = [e for e in history if e["action"] == "alias"]
    assert alias_moves and "champion" in alias_moves[-1]["detail"]


def test_manual_reject_and_approve_move_the_champion(cli: Cli, first_run: dict[str, object]) -> None:
    _, before = _state(cli)
    current = before["champion"]
    rejected = cli("models", "reject", "hybridml-model", str(current), "--reason", "bias review failed")
    assert rejected.returncode == 0, rejected.stderr
    assert "champion" not in _state(cli)[1]
    approved = cli("models", "approve", "hybridml-model", "1", "--reason", "rolled back after review")
    assert approved.returncode == 0, approved.stderr
    assert _state(cli)[1]["champion"] == 1
    history = cli.json("models", "history", "hybridml-model", "--version", str(current))
    assert isinstance(history, list)
    assert history[-1]["reason"] == "bias review failed"


def test_hard_dataset_takes_the_hpo_branch_and_registers_the_best_trial(cli: Cli) -> None:
    frame, target = data.synthetic_hard()
    path = Path(cli.home) / "hard.csv"
    frame.to_csv(path, index=False)
    summary = cli.json("run", "--data", str(path), "--target", target, "--model-name", "hard", "--n-trials", "6")
    assert isinstance(summary, dict)
    assert summary["branch"] == "hpo"
    client = MlflowClient(tracking_uri=f"sqlite:///{cli.home / 'mlflow.db'}")
    version = client.get_model_version("hard", str(summary["model_version"]))
    assert version.tags["branch"] == "hpo"
    experiment = client.get_experiment_by_name("hybridml")
    hpo_runs = client.search_runs([experiment.experiment_id], "tags.`hybridml.role` = 'hpo'")
    assert hpo_runs
    trials = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{hpo_runs[0].info.run_id}'")
    assert len(trials) == 6  # every trial is an MLflow child run
    best = hpo_runs[0].data.params
    registered = client.get_run(version.run_id).data.params
    for key in ("max_depth", "learning_rate", "n_estimators"):
        assert registered[f"param.{key}"] == best[f"best.{key}"]
    if summary["approval_status"] == "Approved":
        assert summary["endpoint"]
    else:  # still below the threshold after HPO: pending, no endpoint, and the way forward
        assert summary["endpoint"] is None
        assert summary["next_step"] == f"hybridml models approve hard {summary['model_version']} --reason '...'"
