"""Train, evaluate and HPO steps."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from hybridml.core import data, evaluate, hpo, model, profile
from hybridml.core.evaluate import RocResult
from hybridml.core.secrets import redact
from hybridml.errors import InvalidInputError
from hybridml.steps import plots
from hybridml.steps.prepare import load_split
from hybridml.steps.runtime import code_version


@dataclass(frozen=True)
class Trained:
    """A fitted, saved and tracked model."""

    run_id: str
    model_uri: str


def parse_params(params_json: str) -> dict[str, Any]:
    """Hyper-parameters given as a JSON object (``""`` means defaults)."""
    if not params_json.strip():
        return {}
    try:
        params = json.loads(params_json)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"params must be a JSON object: {exc}") from exc
    if not isinstance(params, dict):
        raise InvalidInputError(f"params must be a JSON object, got {type(params).__name__}")
    return params


def _tracker(tracking_uri: str, experiment: str) -> Any:
    from hybridml.adapters.tracking import Tracker

    return Tracker(tracking_uri, experiment)


def train(
    *,
    train_path: str,
    test_path: str,
    schema_path: str,
    model_type: str,
    params_json: str,
    seed: int,
    tracking_uri: str,
    experiment: str,
    pipeline_run_id: str,
    run_name: str,
    model_dir: str,
) -> Trained:
    """Fit on the train split, save the bundle to ``model_dir`` and log it as an MLflow model.

    The bundle carries the reference profile: the training split's feature distributions and the distribution
    of this model's scores on the test split. It is complete before it is logged and never changes after.
    """
    from hybridml.registry import Registry

    model.check_model_type(model_type)
    params = parse_params(params_json)
    frame, schema = load_split(train_path, schema_path)
    estimator = model.fit(
        model_type, params, data.encode_features(frame, schema), data.encode_labels(frame, schema), seed=seed
    )
    test_frame = pd.read_parquet(test_path)
    test_scores = model.positive_scores(estimator, data.encode_features(test_frame, schema))
    reference = profile.build_profile(frame, schema, test_scores)
    bundle = model.save_bundle(estimator, model_type, params, schema, model_dir, profile=reference)

    tracker = _tracker(tracking_uri, experiment)
    parent = tracker.pipeline_run(pipeline_run_id, {"hybridml.code_version": code_version()})
    run_id = tracker.start_run(
        run_name,
        {
            "hybridml.pipeline_run_id": pipeline_run_id,
            "hybridml.role": "train",
            "hybridml.data_hash": schema.data_hash,
            "hybridml.code_version": code_version(),
        },
        parent_run_id=parent,
    )
    with tracker.guard(run_id):  # a failure from here on leaves the run (and its pipeline run) FAILED
        tracker.log(
            run_id,
            params={
                "model_type": model_type,
                "seed": seed,
                "train_rows": len(frame),
                "features": len(schema.features),
                **{f"param.{k}": v for k, v in params.items()},
            },
        )
        model_uri = Registry(tracking_uri, user="pipeline").log_bundle(run_id, bundle)
    return Trained(run_id=run_id, model_uri=model_uri)


def evaluate_model(*, model_dir: str, test_path: str, run_id: str, tracking_uri: str, experiment: str) -> RocResult:
    """ROC AUC of the saved model on the test split; the curve is logged to the MLflow run (ended here)."""
    tracker = _tracker(tracking_uri, experiment)
    with tracker.guard(run_id):  # the train step started the run: any failure here leaves it FAILED
        bundle = model.read_bundle(model_dir)
        frame = pd.read_parquet(test_path)
        scores = model.positive_scores(model.load_estimator(bundle), data.encode_features(frame, bundle.schema))
        result = evaluate.roc(data.encode_labels(frame, bundle.schema), scores)
        tracker.log(run_id, metrics={"roc_auc": result.roc_auc, "test_rows": len(frame)})
        fig = plots.roc_figure(result, f"ROC on {len(frame)} test rows")
        try:
            tracker.log_figure(run_id, fig, "plots/roc_curve.png")
        finally:
            plots.close(fig)
        tracker.log_text(
            run_id,
            json.dumps({"fpr": result.fpr, "tpr": result.tpr, "thresholds": result.thresholds}),
            "metrics/roc_curve.json",
        )
    tracker.end_run(run_id)
    return result


@dataclass(frozen=True)
class SearchResult:
    """Outcome of the HPO step."""

    best_params_json: str
    best_value: float
    n_trials: int
    n_pruned: int
    run_id: str

    def markdown(self) -> str:
        """A short Markdown report for the KFP UI."""
        return (
            f"## HPO\n\n- completed trials: {self.n_trials}\n- pruned trials: {self.n_pruned}\n"
            f"- best validation ROC AUC: {self.best_value:.4f}\n- best params: `{self.best_params_json}`\n"
        )


def search(
    *,
    train_path: str,
    valid_path: str,
    schema_path: str,
    model_type: str,
    n_trials: int,
    timeout_s: float,
    storage: str,
    seed: int,
    tracking_uri: str,
    experiment: str,
    pipeline_run_id: str,
) -> SearchResult:
    """Optuna TPE search maximising validation ROC AUC; every trial is an MLflow child run of an ``hpo`` run."""
    import mlflow
    import optuna
    from optuna_integration.mlflow import MLflowCallback

    model.check_model_type(model_type)
    train_frame, schema = load_split(train_path, schema_path)
    valid_frame, _ = load_split(valid_path, schema_path)
    objective = hpo.make_objective(
        model_type,
        data.encode_features(train_frame, schema),
        data.encode_labels(train_frame, schema),
        data.encode_features(valid_frame, schema),
        data.encode_labels(valid_frame, schema),
        seed=seed,
    )
    tracker = _tracker(tracking_uri, experiment)
    parent = tracker.pipeline_run(pipeline_run_id, {"hybridml.code_version": code_version()})
    run_id = tracker.start_run(
        "hpo", {"hybridml.pipeline_run_id": pipeline_run_id, "hybridml.role": "hpo"}, parent_run_id=parent
    )
    with tracker.guard(run_id):  # a failed search leaves the hpo run (and its pipeline run) FAILED
        tracker.log(
            run_id,
            params={
                "model_type": model_type,
                "n_trials": n_trials,
                "timeout_s": timeout_s,
                "storage": redact(storage) if storage else "memory",  # a database URI may hold a password
                "sampler": "TPE",
                "pruner": "median",
            },
        )
        # MLflowCallback uses MLflow's fluent API: point it at this run so trials nest under it.
        mlflow.set_tracking_uri(tracking_uri)
        callback = MLflowCallback(
            tracking_uri=tracking_uri,
            metric_name="valid_roc_auc",
            create_experiment=False,
            mlflow_kwargs={"nested": True, "experiment_id": tracker.experiment_id},
        )
        with mlflow.start_run(run_id=run_id):
            study = hpo.optimize(
                objective,
                n_trials=n_trials,
                timeout_s=timeout_s,
                storage=storage,
                study_name=f"{experiment}-{pipeline_run_id}",
                seed=seed,
                callbacks=[callback],
            )
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
        tracker.log(
            run_id,
            params={f"best.{k}": v for k, v in study.best_params.items()},
            metrics={
                "best_valid_roc_auc": study.best_value,
                "trials_complete": len(done),
                "trials_pruned": len(pruned),
            },
        )
        fig = plots.hpo_history_figure([float(t.value) for t in done if t.value is not None], "HPO history")
        try:
            tracker.log_figure(run_id, fig, "plots/hpo_history.png")
        finally:
            plots.close(fig)
    tracker.end_run(run_id)
    return SearchResult(
        best_params_json=json.dumps(study.best_params, sort_keys=True),
        best_value=study.best_value,
        n_trials=len(done),
        n_pruned=len(pruned),
        run_id=run_id,
    )
