"""Hyper-parameter search with Optuna: search spaces, the objective, and the study runners.

:func:`optimize` runs a whole study in one process. :func:`plan_study`, :func:`work` and :func:`load` split it
over workers that share one storage (processes locally, pods on a cluster): the plan sets the trial budget, each
worker runs trials until the budget is spent, and the study is read back once all workers are done.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna

from hybridml.core import evaluate, model
from hybridml.core.secrets import redact
from hybridml.errors import InvalidInputError, NotFoundError

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
    if uri.lower().startswith("sqlite"):
        # SQLite ignores Optuna's FOR UPDATE: in its default deferred transactions two processes both read a
        # trial's state before either writes (a WAITING trial then goes to both), or deadlock upgrading their
        # read locks. IMMEDIATE transactions take the write lock first: one process at a time, as the row lock
        # makes it on PostgreSQL and MySQL.
        storage = optuna.storages.RDBStorage(uri, engine_kwargs={"connect_args": {"timeout": 60}})
        _immediate_transactions(storage.engine)
        return storage
    return optuna.storages.RDBStorage(uri)


def _immediate_transactions(engine: Any) -> None:
    from sqlalchemy import event

    def no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # pysqlite then leaves BEGIN to the listener below

    def begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine, "connect", no_implicit_begin)
    event.listen(engine, "begin", begin_immediate)
    engine.dispose()  # connections opened while Optuna created its tables were made before the listeners


FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
WORKER_ATTR = "worker"  # user attribute of a trial: the index of the worker that ran it
BUDGET_ATTR = "n_trials"  # user attribute of a shared study: how many trials it runs, over all workers


def _study(storage: optuna.storages.BaseStorage | None, study_name: str, seed: int) -> optuna.Study:
    """The study every HPO entry point opens: TPE seeded with ``seed``, median pruning, maximising ROC AUC."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name=study_name,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=10),
        load_if_exists=True,
    )


def _check_completed(study: optuna.Study) -> None:
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        raise InvalidInputError(f"HPO finished no trial in study {study.study_name!r} (all pruned or failed)")


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
    study = _study(storage_from_uri(storage), study_name, seed)
    # A retried step (a pod restarted mid-search) resumes the stored study: only the trials still owed run.
    remaining = n_trials - len(study.get_trials(deepcopy=False, states=FINISHED))
    if remaining > 0:
        study.optimize(objective, n_trials=remaining, timeout=timeout_s, callbacks=list(callbacks), catch=(ValueError,))
    _check_completed(study)
    return study


def _shared(storage: str) -> optuna.storages.BaseStorage:
    found = storage_from_uri(storage)
    if found is None:
        raise InvalidInputError(
            "HPO workers need a storage they all reach (a journal file, SQLite or an RDB URL), not memory"
        )
    return found


def plan_study(*, n_trials: int, storage: str, study_name: str, seed: int = 0) -> optuna.Study:
    """Create the shared study (or find it again) with its budget: ``n_trials`` trials in all, over every worker.

    The budget is the study's user attribute ``n_trials``; planning again (a retried plan step) only sets it again.
    """
    if n_trials < 1:
        raise InvalidInputError(f"n_trials must be at least 1, got {n_trials}")
    study = _study(_shared(storage), study_name, seed)
    study.set_user_attr(BUDGET_ATTR, n_trials)
    return study


def _next_trial(
    study: optuna.Study, storage: optuna.storages.BaseStorage, study_id: int, budget: int, worker: int
) -> optuna.Trial | None:
    """The next trial for ``worker``: one its earlier attempt left running, else a new one in budget; None when done.

    Trial numbers are handed out densely and once each by every storage (the study row is locked, the journal is
    serial), so the trials numbered below the budget are exactly the budget: a worker that draws a number past it
    puts that trial back as WAITING, never to run, and stops. A worker index runs in one process at a time (a
    retried KFP task replaces the one that died), so a trial RUNNING under this worker's index was left by a dead
    attempt and is this worker's to finish.
    """
    trials = study.get_trials(deepcopy=False)
    for trial in trials:
        if trial.state == optuna.trial.TrialState.RUNNING and trial.user_attrs.get(WORKER_ATTR) == worker:
            return optuna.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, trial.number))
    if len(trials) >= budget:
        return None  # every trial of the budget is taken: nothing is left to draw
    drawn = study.ask()
    if drawn.number >= budget:  # another worker drew the last one between the count above and this ask
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, drawn.number)
        storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.WAITING)
        return None
    drawn.set_user_attr(WORKER_ATTR, worker)
    return drawn


def _run_trial(
    study: optuna.Study, trial: optuna.Trial, objective: Objective, catch: tuple[type[Exception], ...]
) -> optuna.trial.FrozenTrial:
    try:
        value = objective(trial)
    except optuna.TrialPruned:
        return study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    except catch:
        return study.tell(trial, state=optuna.trial.TrialState.FAIL)
    except Exception:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise
    return study.tell(trial, value)


def work(
    objective: Objective,
    *,
    storage: str,
    study_name: str,
    worker: int,
    seed: int = 0,
    timeout_s: float | None = None,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Run trials of the planned study, one at a time, until its budget is spent; returns how many this worker ran.

    Several workers (processes or pods) run this on one storage at once; the study ends with exactly its budget of
    finished trials (a trial drawn past the budget by a race at the very end stays WAITING and never runs). Each
    trial records the worker's index as the user attribute ``worker``; each worker's sampler is seeded
    ``seed + worker``, so two workers never draw the same random start-up trials. After ``timeout_s`` seconds a
    worker takes no new trial.
    """
    if worker < 0:
        raise InvalidInputError(f"worker index must be at least 0, got {worker}")
    shared = _shared(storage)
    try:
        study_id = shared.get_study_id_from_name(study_name)
    except KeyError as exc:
        where = redact(storage)
        raise NotFoundError(f"HPO study {study_name!r} not found in {where!r}: run the plan step first") from exc
    study = _study(shared, study_name, seed + worker)
    budget = study.user_attrs.get(BUDGET_ATTR)
    if budget is None:
        raise InvalidInputError(f"HPO study {study_name!r} has no trial budget: run the plan step first")
    deadline = None if timeout_s is None or timeout_s <= 0 else clock() + timeout_s
    ran = 0
    while deadline is None or clock() < deadline:
        trial = _next_trial(study, shared, study_id, int(budget), worker)
        if trial is None:
            break
        frozen = _run_trial(study, trial, objective, (ValueError,))
        for callback in callbacks:
            callback(study, frozen)
        ran += 1
    return ran


def load(*, storage: str, study_name: str) -> optuna.Study:
    """The finished shared study, checked to hold at least one completed trial."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=study_name, storage=_shared(storage))
    except KeyError as exc:
        raise NotFoundError(f"HPO study {study_name!r} not found in {redact(storage)!r}") from exc
    _check_completed(study)
    return study
