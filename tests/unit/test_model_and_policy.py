"""Model fit/save/load in safe formats, ROC evaluation, HPO and the approval policy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hybridml.core import approval, data, evaluate, hpo, model
from hybridml.errors import ConflictError, InvalidInputError


@pytest.fixture(scope="module")
def problem() -> tuple[np.ndarray, np.ndarray, object]:
    frame, target = data.builtin_breast_cancer()
    schema = data.infer_schema(frame, target)
    return data.encode_features(frame, schema), data.encode_labels(frame, schema), schema


@pytest.mark.parametrize("model_type", model.MODEL_TYPES)
def test_every_model_type_round_trips_through_a_safe_bundle(problem: tuple, model_type: str, tmp_path: Path) -> None:
    X, y, schema = problem
    params = {"n_estimators": 20} if model_type in ("xgboost", "random_forest") else {}
    fitted = model.fit(model_type, params, X, y, seed=1)
    bundle = model.save_bundle(fitted, model_type, params, schema, tmp_path)
    assert bundle.model_file in ("model.json", "model.skops")
    loaded = model.load_estimator(model.read_bundle(tmp_path))
    np.testing.assert_allclose(model.positive_scores(loaded, X), model.positive_scores(fitted, X), atol=1e-6)


def test_bundle_refuses_a_manifest_pointing_at_a_pickle(problem: tuple, tmp_path: Path) -> None:
    X, y, schema = problem
    model.save_bundle(model.fit("xgboost", {"n_estimators": 5}, X, y), "xgboost", {}, schema, tmp_path)
    manifest = json.loads((tmp_path / model.MANIFEST).read_text())
    (tmp_path / "model.pkl").write_bytes(b"not really")
    (tmp_path / model.MANIFEST).write_text(json.dumps({**manifest, "model_file": "model.pkl"}))
    with pytest.raises(InvalidInputError, match="not an allowed format"):
        model.read_bundle(tmp_path)


def test_unknown_model_type_and_bad_params() -> None:
    with pytest.raises(InvalidInputError, match="unknown model type 'svm'"):
        model.build("svm")
    with pytest.raises(InvalidInputError, match="cannot train"):
        model.fit("logistic_regression", {"C": -1.0}, np.zeros((10, 2)), np.array([0, 1] * 5))


def test_roc_matches_perfect_and_random_scores() -> None:
    y = np.array([0, 0, 1, 1])
    assert evaluate.roc(y, np.array([0.1, 0.2, 0.8, 0.9])).roc_auc == 1.0
    assert evaluate.roc(y, np.array([0.9, 0.8, 0.2, 0.1])).roc_auc == 0.0
    result = evaluate.roc(y, np.array([0.5, 0.5, 0.5, 0.5]))
    assert result.roc_auc == 0.5
    assert all(np.isfinite(result.thresholds))
    with pytest.raises(InvalidInputError, match="both classes"):
        evaluate.roc(np.array([1, 1]), np.array([0.2, 0.3]))


def test_hpo_finds_a_better_model_than_a_bad_default(problem: tuple) -> None:
    X, y, _ = problem
    objective = hpo.make_objective("xgboost", X[:300], y[:300], X[300:], y[300:], seed=0)
    study = hpo.optimize(objective, n_trials=8, timeout_s=60, seed=0)
    assert len(study.trials) == 8
    assert study.best_value > 0.95
    assert set(study.best_params) >= {"max_depth", "learning_rate"}


def test_hpo_storage_uris(tmp_path: Path) -> None:
    assert hpo.storage_from_uri("") is None
    assert hpo.storage_from_uri(f"sqlite:///{tmp_path}/o.db") is not None
    assert hpo.storage_from_uri(f"journal:{tmp_path}/o.log") is not None
    with pytest.raises(InvalidInputError, match="unsupported HPO storage"):
        hpo.storage_from_uri("nowhere")
    with pytest.raises(InvalidInputError, match="n_trials"):
        hpo.optimize(lambda t: 0.5, n_trials=0, timeout_s=None)


@pytest.mark.parametrize(
    ("roc_auc", "champion", "expected"),
    [
        (0.70, None, approval.PENDING),
        (0.80, None, approval.APPROVED),
        (0.80, 0.805, approval.APPROVED),
        (0.80, 0.90, approval.REJECTED),
        (0.95, 0.90, approval.APPROVED),
    ],
)
def test_approval_policy(roc_auc: float, champion: float | None, expected: str) -> None:
    decision = approval.decide(roc_auc, 0.75, champion, 0.01)
    assert decision.status == expected
    assert f"{roc_auc:.4f}" in decision.reason


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_threshold_outside_unit_interval_is_rejected(value: float) -> None:
    with pytest.raises(InvalidInputError, match="threshold must be between 0 and 1"):
        approval.decide(0.8, value, None, 0.01)


@pytest.mark.parametrize(
    ("status", "roc_auc", "champion", "expected"),
    [
        (approval.PENDING, 0.80, None, approval.APPROVED),
        (approval.PENDING, 0.80, 0.90, approval.REJECTED),
        (approval.PENDING, 0.70, None, None),  # stays pending: nothing to change
        (approval.APPROVED, 0.70, 0.99, None),  # a decision already taken stands (a person's, or a retried step's)
        (approval.REJECTED, 0.99, None, None),
    ],
)
def test_auto_decision_only_decides_pending_versions(
    status: str, roc_auc: float, champion: float | None, expected: str | None
) -> None:
    decision = approval.auto_decision(status, roc_auc, 0.75, champion, 0.01)
    assert (decision.status if decision else None) == expected


def test_auto_decision_needs_a_roc_auc() -> None:
    with pytest.raises(InvalidInputError, match="no roc_auc tag"):
        approval.auto_decision(approval.PENDING, None, 0.75, None, 0.01)


# champion before, status before, status after -> champion after
CHAMPION_RULE = [
    (None, approval.PENDING, approval.APPROVED, 3),  # approved: becomes champion
    (2, approval.PENDING, approval.APPROVED, 3),  # approved: takes the alias from the old champion
    (3, approval.APPROVED, approval.APPROVED, 3),  # re-approved champion: no move
    (2, approval.APPROVED, approval.APPROVED, 3),  # an older approved version brought back
    (3, approval.APPROVED, approval.REJECTED, None),  # rejected champion: the alias goes
    (2, approval.APPROVED, approval.REJECTED, 2),  # rejected non-champion: alias stays
    (2, approval.PENDING, approval.REJECTED, 2),
    (None, approval.REJECTED, approval.APPROVED, 3),  # a rejection revised by a person
    (2, approval.REJECTED, approval.REJECTED, 2),
]


@pytest.mark.parametrize(("before", "status_before", "status_after", "after"), CHAMPION_RULE)
def test_champion_rule(before: int | None, status_before: str, status_after: str, after: int | None) -> None:
    change = approval.plan(3, status_before, status_after, before)
    assert change == approval.Change(3, status_before, status_after, before, after)
    assert change.moves_champion is (before != after)
    assert change.removes_champion is (before is not None and after is None)


def test_every_transition_is_in_the_table() -> None:
    assert set(approval.TRANSITIONS) == set(approval.STATUSES)
    for before in approval.STATUSES:
        for after in approval.STATUSES:
            if after in approval.TRANSITIONS[before]:
                approval.plan(1, before, after, None)
            else:
                with pytest.raises(ConflictError, match=f"version 1 is {before}; it cannot become {after}"):
                    approval.plan(1, before, after, None)
    assert approval.PENDING not in set().union(*approval.TRANSITIONS.values())  # no way back to pending


def test_unknown_status_and_champion_alias_rule() -> None:
    with pytest.raises(InvalidInputError, match="unknown approval status 'Deployed'"):
        approval.plan(1, approval.PENDING, "Deployed", None)
    approval.check_alias(approval.CHAMPION, 4, approval.APPROVED)
    approval.check_alias("challenger", 4, approval.PENDING)
    for status in (approval.PENDING, approval.REJECTED):
        with pytest.raises(ConflictError, match=f"version 4 is {status}; only an Approved version can be the champion"):
            approval.check_alias(approval.CHAMPION, 4, status)
