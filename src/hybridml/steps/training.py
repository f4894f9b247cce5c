"""Train, evaluate and HPO steps (the HPO split in plan, workers and best, which share one Optuna study)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
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


HPO_RUN_ATTR = "mlflow_run_id"  # study user attribute: the MLflow ``hpo`` run, so a retried plan finds it again


def resolve_storage(storage: str, home: str, study_name: str) -> str:
    """The storage the HPO workers share: ``storage``, or for ``""``/``memory`` a journal file under ``home``.

    Workers run in other processes than the plan, so an in-memory study cannot be shared: locally an empty
    storage means ``journal:HOME/hpo/STUDY.journal`` (Optuna's file journal takes a lock per write, so several
    processes append to it safely). In a pod, preprocess has already refused pod-local storage (``check_durable``).
    """
    if storage not in ("", "memory"):
        return storage
    from hybridml.config import Settings

    root = Path(home) if home else Settings.from_env().home
    folder = root / "hpo"
    folder.mkdir(parents=True, exist_ok=True)
    return f"journal:{folder / study_name}.journal"


@dataclass(frozen=True)
class SearchPlan:
    """What the plan step hands to the workers: one item per worker, each naming the shared study."""

    workers: list[dict[str, Any]]
    storage: str
    study_name: str
    run_id: str


def plan_search(
    *,
    model_type: str,
    n_trials: int,
    timeout_s: float,
    storage: str,
    seed: int,
    workers: int,
    tracking_uri: str,
    experiment: str,
    pipeline_run_id: str,
    home: str,
) -> SearchPlan:
    """Create the shared study with its budget of ``n_trials`` and the MLflow ``hpo`` run the trials nest under.

    Planning again (a retried step) finds both again: the study keeps the ``hpo`` run's id as a user attribute.
    """
    model.check_model_type(model_type)
    if not 1 <= workers <= 64:
        raise InvalidInputError(f"hpo_workers must be between 1 and 64, got {workers}")
    study_name = f"{experiment}-{pipeline_run_id}"
    shared = resolve_storage(storage, home, study_name)
    study = hpo.plan_study(n_trials=n_trials, storage=shared, study_name=study_name, seed=seed)
    tracker = _tracker(tracking_uri, experiment)
    run_id = str(study.user_attrs.get(HPO_RUN_ATTR) or "")
    if not run_id:
        parent = tracker.pipeline_run(pipeline_run_id, {"hybridml.code_version": code_version()})
        run_id = tracker.start_run(
            "hpo", {"hybridml.pipeline_run_id": pipeline_run_id, "hybridml.role": "hpo"}, parent_run_id=parent
        )
        study.set_user_attr(HPO_RUN_ATTR, run_id)
    with tracker.guard(run_id):
        tracker.log(
            run_id,
            params={
                "model_type": model_type,
                "n_trials": n_trials,
                "timeout_s": timeout_s,
                "storage": redact(shared),  # a database URI may hold a password
                "workers": workers,
                "sampler": "TPE",
                "pruner": "median",
            },
        )
    items = [{"worker": i, "storage": shared, "study": study_name, "run_id": run_id} for i in range(workers)]
    return SearchPlan(workers=items, storage=shared, study_name=study_name, run_id=run_id)


def search_worker(
    *,
    train_path: str,
    valid_path: str,
    schema_path: str,
    model_type: str,
    seed: int,
    worker: int,
    storage: str,
    study_name: str,
    run_id: str,
    timeout_s: float,
    tracking_uri: str,
    experiment: str,
) -> int:
    """Run trials of the shared study until its budget is spent; each is an MLflow child run of the ``hpo`` run.

    Returns how many trials this worker ran. A retried worker finishes what its dead attempt left running.
    """
    import mlflow
    from optuna_integration.mlflow import MLflowCallback

    from hybridml.adapters.tracking import PARENT_TAG

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
    with tracker.guard(run_id):  # a failed worker leaves the hpo run (and its pipeline run) FAILED
        mlflow.set_tracking_uri(tracking_uri)
        # The parent is given as a tag, not by resuming the hpo run here: a resumed run would be ended by
        # whichever worker finishes first while the others still add trials to it.
        callback = MLflowCallback(
            tracking_uri=tracking_uri,
            metric_name="valid_roc_auc",
            create_experiment=False,
            mlflow_kwargs={
                "experiment_id": tracker.experiment_id,
                "tags": {PARENT_TAG: run_id, "hybridml.role": "hpo-trial", "hybridml.hpo_worker": str(worker)},
            },
        )
        return hpo.work(
            objective,
            storage=storage,
            study_name=study_name,
            worker=worker,
            seed=seed,
            timeout_s=timeout_s,
            callbacks=[callback],
        )


@dataclass(frozen=True)
class SearchResult:
    """Outcome of the HPO step."""

    best_params_json: str
    best_value: float
    n_trials: int
    n_pruned: int
    run_id: str
    n_failed: int = 0
    per_worker: dict[int, int] = field(default_factory=dict)

    def markdown(self) -> str:
        """A short Markdown report for the KFP UI."""
        workers = ", ".join(f"worker {w}: {n}" for w, n in sorted(self.per_worker.items()))
        return (
            f"## HPO\n\n- completed trials: {self.n_trials}\n- pruned trials: {self.n_pruned}\n"
            f"- failed trials: {self.n_failed}\n- trials per worker: {workers or 'none'}\n"
            f"- best validation ROC AUC: {self.best_value:.4f}\n- best params: `{self.best_params_json}`\n"
        )


def search_best(*, storage: str, study_name: str, run_id: str, tracking_uri: str, experiment: str) -> SearchResult:
    """Read the shared study once every worker is done: best parameters, counts and the history plot.

    Ends the ``hpo`` run.
    """
    import optuna

    tracker = _tracker(tracking_uri, experiment)
    with tracker.guard(run_id):  # no completed trial, or an unreadable study: the hpo run ends FAILED
        study = hpo.load(storage=storage, study_name=study_name)
        trials = study.get_trials(deepcopy=False, states=hpo.FINISHED)
        done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
        failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
        per_worker: dict[int, int] = {}
        for t in trials:
            worker = int(t.user_attrs.get(hpo.WORKER_ATTR, -1))
            per_worker[worker] = per_worker.get(worker, 0) + 1
        tracker.log(
            run_id,
            params={f"best.{k}": v for k, v in study.best_params.items()},
            metrics={
                "best_valid_roc_auc": study.best_value,
                "trials_complete": len(done),
                "trials_pruned": len(pruned),
                "trials_failed": len(failed),
                **{f"trials_worker_{w}": n for w, n in per_worker.items() if w >= 0},
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
        n_failed=len(failed),
        per_worker=per_worker,
    )
