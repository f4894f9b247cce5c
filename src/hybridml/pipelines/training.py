"""preprocess → train → evaluate → gate → (register | HPO → train best → register) → approve → deploy (+ SageMaker)."""

import functools
from pathlib import Path
from typing import Any

from kfp import compiler, dsl, kubernetes

from hybridml.components import (
    approve,
    deploy,
    evaluate,
    hpo_best,
    hpo_plan,
    hpo_worker,
    inference,
    preprocess,
    register,
    summarize,
    train,
    wait_ready,
)
from hybridml.components import sagemaker_bridge as bridge_to_sagemaker  # the pipeline parameter has its name

PIPELINE_NAME = "hybridml-training"
COMPILED = Path(__file__).with_name("hybridml_training.yaml")


# What the cluster gives the steps' pods (kfp-kubernetes platform config; kfp.local ignores it). The label is the
# one the chart's and manifests' NetworkPolicy admits to the predictors' control port (helm values
# networkPolicy.deployerPodLabels); the Secrets are optional: a pod starts without them (docs/kserve.md).
DEPLOYER_LABEL = ("hybridml.dev/role", "deployer")
# Secret name -> {key in the Secret: environment variable of the step}.
MLFLOW_SECRET = "hybridml-mlflow-credentials"  # noqa: S105 - a Secret's name
MLFLOW_ENV = {k: k for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")}
AWS_SECRET = "hybridml-aws-credentials"  # noqa: S105 - a Secret's name
AWS_ENV = {k: k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
# The Optuna database's password, for the HPO steps' pods (the chart's Secret; user and database: optuna). Given as
# PGPASSWORD, which libpq reads, so hpo_storage holds no password: postgresql+psycopg2://optuna@HOST:5432/optuna.
OPTUNA_CREDENTIALS = "hybridml-postgresql"
OPTUNA_ENV = {"password": "PGPASSWORD"}


def _secret_env(task: dsl.PipelineTask, secret: str, key_to_env: dict[str, str]) -> None:
    # Optional: with the Secret or a key absent, the pod starts without that variable.
    kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env=key_to_env, optional=True)


def _deployer(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """A step that talks to a deploy target: labelled as the deployer (the control port admits it)."""
    return kubernetes.add_pod_label(task, *DEPLOYER_LABEL)


def _no_cache(task: dsl.PipelineTask) -> dsl.PipelineTask:
    # Every step after preprocess writes to MLflow, the registry or a deploy target, or takes the run's own id:
    # a cached result would skip those side effects (or never hit), so they always run.
    return task.set_caching_options(False)


def make_pipeline(cache_preprocess: bool = False) -> Any:
    """The pipeline, with preprocess cacheable or not: the one caching choice a user makes.

    KFP caches a task by its inputs. Preprocess is the only step whose result depends on its inputs alone, and
    even it reads ``data_uri`` by name: a file replaced in place under the same URI is not noticed by a cached
    run. So caching is off unless asked for (``hybridml compile --cache-preprocess``). kfp.local has no cache:
    local runs always run every step.
    """

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Train a binary classifier, gate on ROC AUC (HPO below the threshold), register in MLflow, "
        "approve, deploy to KServe and score held-out rows.",
    )
    def training_pipeline(
        data_uri: str = "",
        target: str = "",
        drop_columns: str = "",
        keep_columns: str = "",
        positive_class: str = "",
        model_name: str = "hybridml-model",
        model_type: str = "xgboost",
        params_json: str = "{}",
        threshold: float = 0.75,
        tolerance: float = 0.01,
        auto_approve: bool = True,
        n_trials: int = 20,
        hpo_timeout_s: float = 600.0,
        hpo_storage: str = "",
        hpo_workers: int = 1,
        seed: int = 42,
        test_size: float = 0.2,
        deploy_target: str = "local",
        deploy_config: str = "",
        sagemaker_bridge: str = "",
        traffic_percent: int = 100,
        ready_timeout_s: float = 120.0,
        predict_rows: int = 5,
        tracking_uri: str = "",
        experiment: str = "hybridml",
        home: str = "",
        kserve_namespace: str = "",
        kserve_service_account: str = "",
    ) -> str:
        """The whole life of a tabular model; returns the run summary as JSON.

        ``drop_columns`` and ``keep_columns`` are JSON lists or comma lists of column names: identifier-like columns
        are left out unless kept, and the summary names every column left out and why. ``positive_class`` is the
        label the model scores (default: the second class in sorted order). ``deploy_config`` is the deploy
        target's typed configuration as a JSON object (see ``hybridml.deploy.config``). ``sagemaker_bridge``, when
        not empty, turns on the SageMaker bridge for Approved versions: a JSON/YAML object of ``SageMakerConfig``
        options (``role_arn``, ``bucket``, ``image_uri``, ``endpoint_name``, ``region``, ``ready_timeout_s``...)
        and an optional ``canary`` percent (1-99); the approval status is mirrored to the SageMaker model package
        group and the version served on the endpoint until InService (see docs/sagemaker.md).
        ``kserve_namespace`` and ``kserve_service_account``, when not empty, set the kserve target's namespace and
        its predictors' ServiceAccount over ``deploy_config`` (other targets ignore them); the steps reach the API
        server as the run's own ServiceAccount (``hybridml submit --service-account``, see docs/kserve.md).
        """
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        tracked = {"tracking_uri": tracking_uri, "experiment": experiment}
        pre = (
            preprocess(
                data_uri=data_uri,
                target=target,
                seed=seed,
                test_size=test_size,
                threshold=threshold,
                model_name=model_name,
                tracking_uri=tracking_uri,
                drop_columns=drop_columns,
                keep_columns=keep_columns,
                positive_class=positive_class,
                # Checked first in a cluster pod: state on the pod's own disk would vanish with it.
                hpo_storage=hpo_storage,
                deploy_target=deploy_target,
                deploy_config=deploy_config,
            )
            .set_caching_options(cache_preprocess)
            .set_display_name("preprocess")
        )

        def fit_and_score(params: Any, label: str) -> tuple[dsl.PipelineTask, dsl.PipelineTask]:
            # The baseline and the HPO branch's retrain are the same two steps with other hyper-parameters.
            fitted = _no_cache(
                train(
                    train=pre.outputs["train"],
                    test=pre.outputs["test"],
                    schema=pre.outputs["schema"],
                    model_type=model_type,
                    params_json=params,
                    seed=seed,
                    pipeline_run_id=run_id,
                    run_name=label.replace(" ", "-"),
                    **tracked,
                )
            ).set_display_name(label)
            scored = _no_cache(
                evaluate(
                    model=fitted.outputs["model"],
                    test=pre.outputs["test"],
                    run_id=fitted.outputs["run_id"],
                    step_name=label.replace("train", "evaluate"),
                    **tracked,
                )
            ).set_display_name(label.replace("train", "evaluate"))
            return fitted, scored

        def register_version(fitted: dsl.PipelineTask, scored: dsl.PipelineTask, branch: str) -> dsl.PipelineTask:
            return _no_cache(
                register(
                    model_name=model_name,
                    model_uri=fitted.outputs["model_uri"],
                    run_id=fitted.outputs["run_id"],
                    roc_auc=scored.outputs["Output"],
                    data_hash=pre.outputs["data_hash"],
                    pipeline_run_id=run_id,
                    branch=branch,
                    tracking_uri=tracking_uri,
                )
            ).set_display_name("register" if branch == "register" else "register best")

        base, scored = fit_and_score(params_json, "train")
        with dsl.If(scored.outputs["Output"] >= threshold, name="roc-meets-threshold"):
            direct = register_version(base, scored, "register")
        with dsl.Else(name="roc-below-threshold"):
            # HPO fans out: the plan sets n_trials on one shared study, hpo_workers workers (pods on a cluster,
            # processes locally) run them, and the best step reads the study once every worker is done.
            plan = _no_cache(
                hpo_plan(
                    model_type=model_type,
                    n_trials=n_trials,
                    timeout_s=hpo_timeout_s,
                    storage=hpo_storage,
                    seed=seed,
                    workers=hpo_workers,
                    pipeline_run_id=run_id,
                    home=home,
                    **tracked,
                )
            ).set_display_name("hpo plan")
            with dsl.ParallelFor(plan.output, name="hpo-workers") as item:
                worker = _no_cache(
                    hpo_worker(
                        train=pre.outputs["train"],
                        valid=pre.outputs["valid"],
                        schema=pre.outputs["schema"],
                        model_type=model_type,
                        seed=seed,
                        worker=item.worker,
                        storage=item.storage,
                        study_name=item.study,
                        run_id=item.run_id,
                        timeout_s=hpo_timeout_s,
                        **tracked,
                    )
                ).set_display_name("hpo worker")
                # A worker pod lost (preempted, evicted, OOM) is retried by Kubeflow and resumes the shared study:
                # it finishes the trials its dead attempt left running, then takes only those still owed.
                worker.set_retry(num_retries=2, backoff_duration="30s")
            search = _no_cache(
                hpo_best(workers=plan.output, trials_run=dsl.Collected(worker.output), **tracked)
            ).set_display_name("hpo")
            for hpo_task in (plan, worker, search):
                _secret_env(hpo_task, OPTUNA_CREDENTIALS, OPTUNA_ENV)
            tuned = register_version(*fit_and_score(search.outputs["best_params_json"], "train best"), "hpo")

        version = dsl.OneOf(direct.outputs["model_version"], tuned.outputs["model_version"])
        roc_auc = dsl.OneOf(direct.outputs["roc_auc"], tuned.outputs["roc_auc"])
        branch = dsl.OneOf(direct.outputs["branch"], tuned.outputs["branch"])
        status = _no_cache(
            approve(
                model_name=model_name,
                version=version,
                threshold=threshold,
                tolerance=tolerance,
                auto_approve=auto_approve,
                tracking_uri=tracking_uri,
            )
        ).set_display_name("approval status")

        summary = functools.partial(
            summarize,
            roc_auc=roc_auc,
            branch=branch,
            model_name=model_name,
            version=version,
            status=status.output,
            dropped_json=pre.outputs["dropped_json"],
            pipeline_run_id=run_id,
            **tracked,
        )
        with dsl.If(status.output == "Approved", name="approved"):
            where = {
                "target": deploy_target,
                "home": home,
                "deploy_config": deploy_config,
                "kserve_namespace": kserve_namespace,
                "kserve_service_account": kserve_service_account,
            }
            placed = _deployer(
                _no_cache(
                    deploy(
                        model_name=model_name,
                        version=version,
                        traffic_percent=traffic_percent,
                        tracking_uri=tracking_uri,
                        **where,
                    )
                ).set_display_name("deploy")
            )
            ready = _deployer(
                _no_cache(
                    wait_ready(model_name=model_name, timeout_s=ready_timeout_s, endpoint=placed.output, **where)
                ).set_display_name("wait until ready")
            )
            scores = _deployer(
                _no_cache(
                    inference(
                        endpoint=ready.output,
                        model_name=model_name,
                        test=pre.outputs["test"],
                        schema=pre.outputs["schema"],
                        n_rows=predict_rows,
                        **where,
                    )
                ).set_display_name("inference")
            )
            served = _no_cache(
                summary(endpoint=ready.output, predictions_json=scores.outputs["Output"])
            ).set_display_name("summary")
            with dsl.If(sagemaker_bridge != "", name="sagemaker-bridge-on"):
                # Beside the local/KServe deploy, not after it: the AWS half neither waits on nor blocks it.
                mirror = _deployer(
                    _no_cache(
                        bridge_to_sagemaker(
                            model_name=model_name,
                            version=version,
                            bridge=sagemaker_bridge,
                            home=home,
                            tracking_uri=tracking_uri,
                        )
                    ).set_display_name("sagemaker bridge")
                )
                # Static keys where IRSA (the ServiceAccount's role annotation) is not used.
                _secret_env(mirror, AWS_SECRET, AWS_ENV)
        with dsl.Else(name="not-approved"):
            held = _no_cache(summary(endpoint="", predictions_json="")).set_display_name("summary")
        # Every step that reads or writes MLflow (it takes tracking_uri) gets the optional tracking credentials,
        # those of either branch included: one rule, so a step added later cannot miss them.
        for task in dsl.pipeline_context.Pipeline.get_default_pipeline().tasks.values():
            if "tracking_uri" in (task.component_spec.inputs or {}):
                _secret_env(task, MLFLOW_SECRET, MLFLOW_ENV)
        return dsl.OneOf(served.output, held.output)

    return training_pipeline


training_pipeline = make_pipeline()


def compile_to(path: "str | Path" = COMPILED, *, cache_preprocess: bool = False) -> Path:
    """Compile the pipeline to KFP IR YAML (what the Kubeflow UI uploads)."""
    path = Path(path)
    pipeline = make_pipeline(cache_preprocess) if cache_preprocess else training_pipeline
    compiler.Compiler().compile(pipeline, str(path))
    return path
