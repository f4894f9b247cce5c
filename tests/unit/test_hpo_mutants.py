"""HPO behaviour the mutation run (issue 12) found unasserted: the space the study records, the objective's value,
storage URIs, the trial count at its boundaries, resumption, failures, pruning and seeding. Cheap objectives only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from hybridml.core import evaluate, hpo, model
from hybridml.errors import InvalidInputError

pytestmark = pytest.mark.unit

COMPLETE = optuna.trial.TrialState.COMPLETE
PRUNED = optuna.trial.TrialState.PRUNED
FAIL = optuna.trial.TrialState.FAIL


@pytest.fixture(scope="module")
def problem() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(240, 4)).astype(np.float32)
    y = (X[:, 0] + 0.8 * X[:, 1] + rng.normal(scale=0.8, size=240) > 0).astype(np.int32)
    return X[:160], y[:160], X[160:], y[160:]


def _sampled_spaces(model_type: str, n: int) -> list[tuple[dict[str, Any], optuna.trial.FrozenTrial]]:
    """``n`` draws of the search space through a real study, each with the trial the study recorded."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=7))
    drawn: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        drawn.append(hpo.search_space(trial, model_type))
        return 0.0

    study.optimize(objective, n_trials=n)
    return list(zip(drawn, study.trials, strict=True))


@pytest.mark.parametrize("model_type", model.MODEL_TYPES)
def test_the_study_records_every_sampled_parameter_under_the_estimators_name(model_type: str) -> None:
    # The training step refits with study.best_params: a parameter recorded under another name is lost.
    for params, trial in _sampled_spaces(model_type, 3):
        tuned = {k: v for k, v in params.items() if not (model_type == "logistic_regression" and k == "max_iter")}
        assert trial.params == tuned
        estimator = model.build(model_type, trial.params, seed=0)
        settings = estimator.get_params()
        prefix = "logisticregression__" if model_type == "logistic_regression" else ""
        assert all(settings[prefix + k] == v for k, v in params.items())


def test_logistic_regression_keeps_its_iteration_budget() -> None:
    (params, trial), *_ = _sampled_spaces("logistic_regression", 1)
    assert set(params) == {"C", "max_iter"} and params["max_iter"] == 1000 and set(trial.params) == {"C"}


# Where each hyper-parameter is valid for its estimator (a sampled value outside fails or means nothing).
VALID: dict[str, tuple[float, float]] = {
    "n_estimators": (1, 10_000),
    "max_iter": (1, 10_000),
    "max_depth": (1, 64),
    "max_leaf_nodes": (2, 10_000),
    "min_samples_leaf": (1, 10_000),
    "learning_rate": (1e-6, 1.0),
    "subsample": (1e-6, 1.0),
    "colsample_bytree": (1e-6, 1.0),
    "min_child_weight": (0.0, 1e6),
    "reg_lambda": (0.0, 1e6),
    "l2_regularization": (0.0, 1e6),
    "C": (1e-9, 1e9),
}


@pytest.mark.parametrize("model_type", model.MODEL_TYPES)
def test_every_declared_range_lies_inside_the_estimators_valid_values(model_type: str) -> None:
    for _, trial in _sampled_spaces(model_type, 1):
        for name, distribution in trial.distributions.items():
            low, high = VALID[name]
            assert low <= distribution.low < distribution.high <= high, name  # type: ignore[attr-defined]


@pytest.mark.parametrize("model_type", model.MODEL_TYPES)
def test_the_objective_is_the_validation_roc_auc_of_that_trials_model(problem: tuple, model_type: str) -> None:
    X_train, y_train, X_valid, y_valid = problem
    (params, _), *_ = _sampled_spaces(model_type, 1)
    trial_params = {k: v for k, v in params.items() if not (model_type == "logistic_regression" and k == "max_iter")}
    if model_type == model.XGBOOST:  # small and random enough that the seed changes the model
        trial_params |= {"n_estimators": 50, "subsample": 0.6, "colsample_bytree": 0.6}
    if model_type == "random_forest":
        trial_params |= {"n_estimators": 50}
    objective = hpo.make_objective(model_type, X_train, y_train, X_valid, y_valid, seed=3)
    value = objective(optuna.trial.FixedTrial(trial_params))
    expected = model.build(model_type, trial_params, seed=3)
    expected.fit(X_train, y_train)
    assert value == evaluate.roc(y_valid, model.positive_scores(expected, X_valid)).roc_auc
    if model_type in (model.XGBOOST, "random_forest"):
        other = model.build(model_type, trial_params, seed=4)
        other.fit(X_train, y_train)
        assert value != evaluate.roc(y_valid, model.positive_scores(other, X_valid)).roc_auc


def test_an_unknown_model_type_is_refused_by_the_search_space() -> None:
    with pytest.raises(InvalidInputError, match="unknown model type 'svm'"):
        hpo.search_space(optuna.trial.FixedTrial({}), "svm")


# ------------------------------------------------------------------------------------------------ storage


@pytest.mark.parametrize("uri", ["", "memory"])
def test_memory_uris_mean_in_process(uri: str) -> None:
    assert hpo.storage_from_uri(uri) is None


def test_a_journal_uri_with_slashes_names_that_absolute_file(tmp_path: Path) -> None:
    path = tmp_path / "study.log"
    study = hpo.optimize(lambda t: 0.5, n_trials=1, timeout_s=None, storage=f"journal://{path}", study_name="j")
    assert path.is_file() and len(study.trials) == 1
    again = hpo.optimize(lambda t: 0.5, n_trials=2, timeout_s=None, storage=f"journal:{path}", study_name="j")
    assert len(again.trials) == 2  # the same file: the first trial counted


def test_a_sqlite_uri_is_a_durable_study(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/o.db"
    hpo.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2, timeout_s=None, storage=uri, study_name="s")
    loaded = optuna.load_study(study_name="s", storage=uri)
    assert [t.state for t in loaded.trials] == [COMPLETE, COMPLETE]


def test_an_unsupported_storage_is_refused_naming_the_choices() -> None:
    with pytest.raises(InvalidInputError) as caught:
        hpo.storage_from_uri("nowhere")
    assert str(caught.value) == (
        "unsupported HPO storage 'nowhere' (use memory, sqlite:///FILE, an RDB URL or journal:FILE)"
    )


@pytest.mark.parametrize("uri", ["postgresql:/alice:s3cret@db/optuna", "alice:s3cret@db/optuna"])
def test_a_mistyped_storage_uri_is_refused_without_its_password(uri: str) -> None:
    with pytest.raises(InvalidInputError, match="unsupported HPO storage") as caught:
        hpo.storage_from_uri(uri)
    assert "s3cret" not in str(caught.value)


# ------------------------------------------------------------------------------------------------ optimize


def test_one_trial_is_enough_and_zero_is_refused() -> None:
    study = hpo.optimize(lambda t: 0.5, n_trials=1, timeout_s=None)
    assert [t.state for t in study.trials] == [COMPLETE]
    for bad in (0, -1):
        with pytest.raises(InvalidInputError, match=rf"^n_trials must be at least 1, got {bad}$"):
            hpo.optimize(lambda t: 0.5, n_trials=bad, timeout_s=None)


@pytest.mark.parametrize("timeout_s", [0, -5, None, 3600])
def test_a_zero_or_negative_timeout_means_no_time_limit(timeout_s: float | None) -> None:
    study = hpo.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=4, timeout_s=timeout_s)
    assert len(study.trials) == 4


def test_the_study_maximises_and_is_named() -> None:
    study = hpo.optimize(lambda t: float(t.number % 3), n_trials=5, timeout_s=None, study_name="named")
    assert study.study_name == "named"
    assert study.best_value == 2.0 and study.best_trial.number == 2


def test_the_seed_decides_the_sampled_values() -> None:
    def run(seed: int) -> list[float]:
        study = hpo.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=12, timeout_s=None, seed=seed)
        return [t.params["x"] for t in study.trials]

    assert run(5) == run(5)
    assert run(5) != run(6)
    # The default seed is 0.
    default = hpo.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=12, timeout_s=None)
    assert [t.params["x"] for t in default.trials] == run(0)


def test_callbacks_see_every_trial() -> None:
    seen: list[int] = []
    hpo.optimize(lambda t: 0.5, n_trials=3, timeout_s=None, callbacks=[lambda s, t: seen.append(t.number)])
    assert seen == [0, 1, 2]


def test_a_value_error_fails_one_trial_and_the_search_goes_on() -> None:
    def objective(trial: optuna.Trial) -> float:
        if trial.number == 1:
            raise ValueError("bad params")
        return 0.5

    study = hpo.optimize(objective, n_trials=3, timeout_s=None)
    assert [t.state for t in study.trials] == [COMPLETE, FAIL, COMPLETE]


def test_a_study_without_a_completed_trial_is_refused() -> None:
    def objective(trial: optuna.Trial) -> float:
        raise ValueError("always")

    with pytest.raises(InvalidInputError, match=r"^HPO finished no trial in study 'doomed' \(all pruned or failed\)$"):
        hpo.optimize(objective, n_trials=2, timeout_s=None, study_name="doomed")


def test_a_resumed_study_runs_only_the_trials_still_owed(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/r.db"
    calls: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        calls.append(trial.number)
        if trial.number == 0:
            raise ValueError("a failed trial still counts as finished")
        return 0.5

    hpo.optimize(objective, n_trials=3, timeout_s=None, storage=uri, study_name="r")
    assert calls == [0, 1, 2]
    study = hpo.optimize(objective, n_trials=3, timeout_s=None, storage=uri, study_name="r")
    assert calls == [0, 1, 2] and len(study.trials) == 3
    study = hpo.optimize(objective, n_trials=5, timeout_s=None, storage=uri, study_name="r")
    assert calls == [0, 1, 2, 3, 4] and [t.state for t in study.trials] == [FAIL] + [COMPLETE] * 4


def test_median_pruning_waits_for_five_trials_and_ten_steps() -> None:
    # Trials 0-4 report 1.0 at every step; later trials report 0.0 and would be pruned as soon as allowed.
    def objective(trial: optuna.Trial) -> float:
        value = 1.0 if trial.number < 5 else 0.0
        for step in range(20):
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned
        return value

    study = hpo.optimize(objective, n_trials=7, timeout_s=None)
    states = [t.state for t in study.trials]
    assert states == [COMPLETE] * 5 + [PRUNED] * 2
    assert [t.last_step for t in study.trials[5:]] == [10, 10]


class _PruneAlways(optuna.trial.FixedTrial):
    """A fixed trial the pruner always wants to stop."""

    def should_prune(self) -> bool:
        return True


def test_xgboost_trials_report_each_round_so_the_pruner_can_stop_them(problem: tuple) -> None:
    X_train, y_train, X_valid, y_valid = problem
    objective = hpo.make_objective("xgboost", X_train, y_train, X_valid, y_valid, seed=0)
    (params, _), *_ = _sampled_spaces("xgboost", 1)
    with pytest.raises(optuna.TrialPruned):
        objective(_PruneAlways({**params, "n_estimators": 50}))


def test_xgboost_trials_print_nothing(problem: tuple, capsys: pytest.CaptureFixture[str]) -> None:
    X_train, y_train, X_valid, y_valid = problem
    objective = hpo.make_objective("xgboost", X_train, y_train, X_valid, y_valid, seed=0)
    (params, _), *_ = _sampled_spaces("xgboost", 1)
    objective(optuna.trial.FixedTrial({**params, "n_estimators": 50}))
    assert capsys.readouterr().out == ""


def test_the_default_study_name_is_stable_for_resumption() -> None:
    assert hpo.optimize(lambda t: 0.5, n_trials=1, timeout_s=None).study_name == "hybridml"


def test_a_trial_left_running_by_a_dead_attempt_does_not_count(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/run.db"
    stale = optuna.create_study(study_name="r", storage=uri, direction="maximize")
    stale.ask()  # a pod killed mid-trial leaves it RUNNING forever
    study = hpo.optimize(lambda t: 0.5, n_trials=2, timeout_s=None, storage=uri, study_name="r")
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE", "COMPLETE", "RUNNING"]
