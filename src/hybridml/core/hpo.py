"""Hyper-parameter search with Optuna: search spaces, the objective, and the study runner."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna

from hybridml.core import evaluate, model
from hybridml.core.secrets import redact
from hybridml.errors import InvalidInputError

Objective = Callable[[optuna.Trial], float]


def search_space(trial: optuna.Trial, model_type: str) -> dict[str, Any]:
    """Sample one set of hyper-parameters for ``model_type``."""
    model.check_model_type(model_type)
    if model_type == model.XGBOOST:
        return {
            "n_estimators": trial.suggest_int("n_estimators", 50, 400, step=50),
            "max_depth": trial.suggest_int("max_depth", 2, 8),
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "subsample": trial.suggest_float("subsample", 0.5, 1.0),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
            "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 10.0, log=True),
            "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
        }
    if model_type == "hist_gradient_boosting":
        return {
            "max_iter": trial.suggest_int("max_iter", 50, 400, step=50),
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "max_leaf_nodes": trial.suggest_int("max_leaf_nodes", 8, 64),
            "l2_regularization": trial.suggest_float("l2_regularization", 1e-4, 10.0, log=True),
        }
    if model_type == "random_forest":
        return {
            "n_estimators": trial.suggest_int("n_estimators", 50, 300, step=50),
            "max_depth": trial.suggest_int("max_depth", 2, 16),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 20),
        }
    return {"C": trial.suggest_float("C", 1e-3, 100.0, log=True), "max_iter": 1000}


def make_objective(
    model_type: str,
    X_train: np.ndarray,  # noqa: N803
    y_train: np.ndarray,
    X_valid: np.ndarray,  # noqa: N803
    y_valid: np.ndarray,
    *,
    seed: int,
) -> Objective:
    """Objective maximising validation ROC AUC; XGBoost trials report per round so the pruner can stop them."""

    def objective(trial: optuna.Trial) -> float:
        params = search_space(trial, model_type)
        estimator = model.build(model_type, params, seed=seed)
        if model_type == model.XGBOOST:
            from optuna_integration import XGBoostPruningCallback

            estimator.set_params(callbacks=[XGBoostPruningCallback(trial, "validation_0-auc")])  # type: ignore[attr-defined]
            estimator.fit(X_train, y_train, eval_set=[(X_valid, y_valid)], verbose=False)  # type: ignore[call-arg]
        else:
            estimator.fit(X_train, y_train)
        return evaluate.roc(y_valid, model.positive_scores(estimator, X_valid)).roc_auc

    return objective


def storage_from_uri(uri: str) -> optuna.storages.BaseStorage | None:
    """Optuna storage for a URI: ``""``/``memory`` (in-process), ``sqlite:///...``/any SQLAlchemy URL, ``journal:PATH``.

    A shared RDB or journal lets parallel workers (pods) join the same study.
    """
    if uri in ("", "memory"):
        return None
    if uri.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(uri.removeprefix("journal:").removeprefix("//")))
    if "://" not in uri:
        raise InvalidInputError(
            f"unsupported HPO storage {redact(uri)!r} (use memory, sqlite:///FILE, an RDB URL or journal:FILE)"
        )
    return optuna.storages.RDBStorage(uri)


def optimize(
    objective: Objective,
    *,
    n_trials: int,
    timeout_s: float | None,
    storage: str = "",
    study_name: str = "hybridml",
    seed: int = 0,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
) -> optuna.Study:
    """Run a TPE study with median pruning until it holds ``n_trials`` finished trials.

    A study that ``storage`` already holds is resumed: trials finished before (by an earlier attempt of the
    same step) count, so a retried step continues the trial count instead of starting over.
    """
    if n_trials < 1:
        raise InvalidInputError(f"n_trials must be at least 1, got {n_trials}")
    if timeout_s is not None and timeout_s <= 0:
        timeout_s = None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name,
        storage=storage_from_uri(storage),
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=10),
        load_if_exists=True,
    )
    # A retried step (a pod restarted mid-search) resumes the stored study: only the trials still owed run.
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    remaining = n_trials - len(study.get_trials(deepcopy=False, states=finished))
    if remaining > 0:
        study.optimize(objective, n_trials=remaining, timeout=timeout_s, callbacks=list(callbacks), catch=(ValueError,))
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise InvalidInputError(f"HPO finished no trial in study {study_name!r} (all pruned or failed)")
    return study
