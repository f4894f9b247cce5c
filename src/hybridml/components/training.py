"""Components of the model-building half: preprocess, train, evaluate, HPO."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from hybridml.components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def preprocess(
    data_uri: str,
    target: str,
    seed: int,
    test_size: float,
    threshold: float,
    model_name: str,
    tracking_uri: str,
    drop_columns: str,
    keep_columns: str,
    positive_class: str,
    hpo_storage: str,
    deploy_target: str,
    deploy_config: str,
    train: Output[Dataset],
    valid: Output[Dataset],
    test: Output[Dataset],
    schema: Output[Artifact],
) -> NamedTuple("PreprocessOutputs", [("data_hash", str), ("n_rows", int), ("dropped_json", str)]):  # type: ignore[valid-type]
    """Validate and split the table; infer the feature schema; leave identifier-like columns out, named."""
    from collections import namedtuple

    from hybridml.steps.runtime import run_step, tracking_uri_or_default

    out = run_step(
        "preprocess",
        "hybridml.steps.prepare:preprocess",
        data_uri=data_uri,
        target=target,
        seed=seed,
        test_size=test_size,
        threshold=threshold,
        model_name=model_name,
        tracking_uri=tracking_uri_or_default(tracking_uri),
        train_path=train.path,
        valid_path=valid.path,
        test_path=test.path,
        schema_path=schema.path,
        drop_columns=drop_columns,
        keep_columns=keep_columns,
        positive_class=positive_class,
        hpo_storage=hpo_storage,
        deploy_target=deploy_target,
        deploy_config=deploy_config,
    )
    for artifact in (train, valid, test):
        artifact.metadata["data_hash"] = out.data_hash
    schema.metadata.update({"n_rows": out.n_rows, "n_features": out.n_features, "dropped": out.dropped})
    return namedtuple("PreprocessOutputs", ["data_hash", "n_rows", "dropped_json"])(  # type: ignore[call-arg]
        out.data_hash, out.n_rows, out.dropped_json
    )


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train(
    train: Input[Dataset],
    test: Input[Dataset],
    schema: Input[Artifact],
    model_type: str,
    params_json: str,
    seed: int,
    tracking_uri: str,
    experiment: str,
    pipeline_run_id: str,
    run_name: str,
    model: Output[Model],
) -> NamedTuple("TrainOutputs", [("run_id", str), ("model_uri", str)]):  # type: ignore[valid-type]
    """Fit the model, profile the training data and the test scores, and log the bundle to MLflow."""
    from collections import namedtuple

    from hybridml.steps.runtime import run_step, tracking_uri_or_default

    out = run_step(
        run_name,
        "hybridml.steps.training:train",
        train_path=train.path,
        test_path=test.path,
        schema_path=schema.path,
        model_type=model_type,
        params_json=params_json,
        seed=seed,
        tracking_uri=tracking_uri_or_default(tracking_uri),
        experiment=experiment,
        pipeline_run_id=pipeline_run_id,
        run_name=run_name,
        model_dir=model.path,
    )
    model.metadata.update({"model_type": model_type, "mlflow_run_id": out.run_id, "mlflow_model_uri": out.model_uri})
    return namedtuple("TrainOutputs", ["run_id", "model_uri"])(out.run_id, out.model_uri)  # type: ignore[call-arg]


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    test: Input[Dataset],
    run_id: str,
    tracking_uri: str,
    experiment: str,
    step_name: str,
    metrics: Output[Metrics],
    roc: Output[ClassificationMetrics],
) -> float:
    """ROC AUC on the test split; the ROC curve is drawn in the KFP UI and MLflow."""
    from hybridml.steps.runtime import run_step, tracking_uri_or_default

    result = run_step(
        step_name,
        "hybridml.steps.training:evaluate_model",
        model_dir=model.path,
        test_path=test.path,
        run_id=run_id,
        tracking_uri=tracking_uri_or_default(tracking_uri),
        experiment=experiment,
    )
    metrics.log_metric("roc_auc", result.roc_auc)
    roc.log_roc_curve(result.fpr, result.tpr, result.thresholds)
    return result.roc_auc


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def hpo_plan(
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
) -> list:
    """Create the shared Optuna study with its trial budget and the MLflow ``hpo`` run; one item per worker."""
    from hybridml.steps.runtime import run_step, tracking_uri_or_default

    plan = run_step(
        "hpo plan",
        "hybridml.steps.training:plan_search",
        model_type=model_type,
        n_trials=n_trials,
        timeout_s=timeout_s,
        storage=storage,
        seed=seed,
        workers=workers,
        tracking_uri=tracking_uri_or_default(tracking_uri),
        experiment=experiment,
        pipeline_run_id=pipeline_run_id,
        home=home,
    )
    return plan.workers


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def hpo_worker(
    train: Input[Dataset],
    valid: Input[Dataset],
    schema: Input[Artifact],
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
    """Run trials of the shared study until its budget is spent; returns how many this worker ran."""
    from hybridml.steps.runtime import run_step, tracking_uri_or_default

    return run_step(
        f"hpo worker {worker}",
        "hybridml.steps.training:search_worker",
        train_path=train.path,
        valid_path=valid.path,
        schema_path=schema.path,
        model_type=model_type,
        seed=seed,
        worker=worker,
        storage=storage,
        study_name=study_name,
        run_id=run_id,
        timeout_s=timeout_s,
        tracking_uri=tracking_uri_or_default(tracking_uri),
        experiment=experiment,
    )


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def hpo_best(
    workers: list,
    trials_run: list,
    tracking_uri: str,
    experiment: str,
    metrics: Output[Metrics],
    report: Output[Markdown],
) -> NamedTuple("HpoOutputs", [("best_params_json", str), ("best_value", float)]):  # type: ignore[valid-type]
    """Read the study once every worker is done: the best parameters, the counts and the history plot."""
    from collections import namedtuple
    from pathlib import Path

    from hybridml.steps.runtime import run_step, tracking_uri_or_default

    plan = workers[0]  # every item names the same study, storage and hpo run
    out = run_step(
        "hpo best",
        "hybridml.steps.training:search_best",
        storage=plan["storage"],
        study_name=plan["study"],
        run_id=plan["run_id"],
        tracking_uri=tracking_uri_or_default(tracking_uri),
        experiment=experiment,
    )
    metrics.log_metric("best_valid_roc_auc", out.best_value)
    metrics.log_metric("trials_complete", out.n_trials)
    metrics.log_metric("trials_pruned", out.n_pruned)
    metrics.log_metric("trials_failed", out.n_failed)
    metrics.log_metric("workers", len(trials_run))
    Path(report.path).write_text(out.markdown())
    return namedtuple("HpoOutputs", ["best_params_json", "best_value"])(out.best_params_json, out.best_value)  # type: ignore[call-arg]
