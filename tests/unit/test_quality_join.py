"""Feedback labels joined with logged predictions (hybridml.monitoring.feedback_join.online_quality)."""

from __future__ import annotations

from typing import Any

import pytest

from hybridml.core.quality import roc_auc_delong
from hybridml.errors import InvalidInputError
from hybridml.monitoring.feedback_join import OnlineQuality, first_seen, online_quality


def pred(rid: str, outputs: list[float], *, ts: float = 100.0, version: str = "1", variant: str = "stable",
         model: str = "m") -> dict[str, Any]:  # fmt: skip
    return {"record_version": 2, "ts": ts, "request_id": rid, "model": model, "version": version,
            "variant": variant, "outputs": outputs}  # fmt: skip


def label(rid: str, value: int, *, ts: float = 200.0, model: str | None = "m") -> dict[str, Any]:
    record: dict[str, Any] = {"ts": ts, "request_id": rid, "label": value}
    if model is not None:
        record["model"] = model
    return record


def test_auc_and_counts_per_version_and_variant() -> None:
    scores = [0.9, 0.8, 0.4, 0.7, 0.3, 0.2, 0.1]
    labels = [1, 1, 1, 0, 0, 0, 0]
    payload = [pred(f"s{i}", [s]) for i, s in enumerate(scores)]
    payload += [pred(f"c{i}", [s], version="2", variant="canary") for i, s in enumerate(scores)]
    feedback = [label(f"s{i}", y) for i, y in enumerate(labels)]
    feedback += [label(f"c{i}", 1 - y) for i, y in enumerate(labels)]  # the canary ranks every pair wrong...
    quality = online_quality(payload, feedback)
    assert list(quality) == [("1", "stable"), ("2", "canary")]
    expected = roc_auc_delong(labels, scores)
    assert expected is not None
    assert quality[("1", "stable")] == OnlineQuality(
        auc=expected.auc, low=expected.low, high=expected.high, n=7, positives=3, negatives=4, se=expected.se
    )
    canary = quality[("2", "canary")]
    assert canary.auc == pytest.approx(1 - 11 / 12)  # ...but one
    assert (canary.n, canary.positives, canary.negatives) == (7, 4, 3)
    assert canary.positive_rate == pytest.approx(4 / 7)


def test_a_missing_class_gives_auc_none() -> None:
    quality = online_quality([pred("a", [0.2]), pred("b", [0.7])], [label("a", 1), label("b", 1)])
    assert quality[("1", "stable")] == OnlineQuality(None, None, None, 2, 2, 0)
    assert quality[("1", "stable")].estimate() is None


def test_versions_with_predictions_and_no_labels_are_reported_empty() -> None:
    quality = online_quality([pred("a", [0.2], version="3", variant="canary")], [])
    assert quality == {("3", "canary"): OnlineQuality(None, None, None, 0, 0, 0)}
    assert quality[("3", "canary")].positive_rate is None


def test_duplicates_last_label_wins_and_conflicts_are_counted() -> None:
    payload = [pred("a", [0.9]), pred("b", [0.1]), pred("c", [0.5])]
    feedback = [
        label("a", 0, ts=200),
        label("b", 0, ts=201),
        label("a", 1, ts=300),  # a correction: conflict, wins
        label("b", 0, ts=301),  # a repeat: duplicate without conflict
        label("c", 1, ts=250),
        label("c", 0, ts=240),  # earlier in time though later in the file: c keeps label 1
    ]
    q = online_quality(payload, feedback)[("1", "stable")]
    assert (q.n, q.positives, q.negatives) == (3, 2, 1)
    assert (q.duplicates, q.conflicts) == (3, 2)
    assert q.auc == pytest.approx(1.0)  # a=1 (0.9), c=1 (0.5), b=0 (0.1)


def test_late_labels_are_used_and_counted_expired_ones_are_not() -> None:
    payload = [pred("a", [0.9], ts=1000), pred("b", [0.1], ts=1000), pred("c", [0.4], ts=1000)]
    feedback = [
        label("a", 1, ts=1000 + 10),  # on time
        label("b", 0, ts=1000 + 301),  # late (> 300 s) but within the max age
        label("c", 1, ts=1000 + 3601),  # past the max age: expired
    ]
    q = online_quality(payload, feedback, max_age_s=3600, late_after_s=300)
    assert (q[("1", "stable")].n, q[("1", "stable")].late, q[("1", "stable")].expired) == (2, 1, 1)
    # Exactly at the limits: still joined, not late.
    edge = online_quality(payload[:1], [label("a", 1, ts=1300)], max_age_s=300, late_after_s=300)
    assert (edge[("1", "stable")].n, edge[("1", "stable")].late, edge[("1", "stable")].expired) == (1, 0, 0)


def test_an_expired_correction_does_not_replace_the_label() -> None:
    payload = [pred("a", [0.9], ts=0), pred("b", [0.1], ts=0)]
    feedback = [label("a", 1, ts=10), label("b", 0, ts=10), label("a", 0, ts=10_000)]
    q = online_quality(payload, feedback, max_age_s=100)[("1", "stable")]
    assert (q.positives, q.negatives, q.duplicates, q.expired) == (1, 1, 0, 1)


def test_unmatched_labels_and_labels_before_their_prediction() -> None:
    payload = [pred("a", [0.9], ts=100)]
    feedback = [label("nobody", 1), label("a", 1, ts=50)]  # a label older than the prediction names no request
    q = online_quality(payload, feedback)[("1", "stable")]
    assert (q.n, q.unmatched) == (0, 2)


def test_a_reused_request_id_labels_the_latest_earlier_prediction() -> None:
    payload = [pred("r", [0.2], ts=100, version="1"), pred("r", [0.8], ts=500, version="2")]
    quality = online_quality(payload, [label("r", 1, ts=300), label("r", 0, ts=600)])
    assert (quality[("1", "stable")].n, quality[("1", "stable")].positives) == (1, 1)
    assert (quality[("2", "stable")].n, quality[("2", "stable")].negatives) == (1, 1)


def test_rows_of_a_several_row_request_are_labelled_with_a_row_suffix() -> None:
    payload = [pred("batch", [0.9, 0.2, 0.6]), pred("odd#1", [0.3])]
    feedback = [
        label("batch#0", 1),
        label("batch#1", 0),
        label("batch#7", 1),  # no such row: unmatched
        label("batch", 1),  # which row? ambiguous
        label("odd#1", 0),  # an id that exists as such is that request
    ]
    q = online_quality(payload, feedback)[("1", "stable")]
    assert (q.n, q.positives, q.negatives, q.unmatched, q.ambiguous) == (3, 1, 2, 1, 1)
    assert q.auc == pytest.approx(1.0)


def test_shadow_rows_are_their_own_variant() -> None:
    payload = [
        pred("a", [0.9], variant="stable"),
        pred("a", [0.1], version="9", variant="shadow"),
        pred("b", [0.2], version="2", variant="canary"),
        pred("b", [0.8], version="9", variant="shadow"),
    ]
    quality = online_quality(payload, [label("a", 1), label("b", 0)])
    assert sorted(quality) == [("1", "stable"), ("2", "canary"), ("9", "shadow")]
    assert (quality[("1", "stable")].n, quality[("2", "canary")].n) == (1, 1)
    shadow = quality[("9", "shadow")]
    assert (shadow.n, shadow.positives, shadow.auc) == (2, 1, 0.0)  # the shadow scored them backwards


def test_model_and_since_filters() -> None:
    payload = [pred("a", [0.9], ts=10), pred("b", [0.1], ts=20), pred("c", [0.5], ts=20, model="other")]
    feedback = [label("a", 1), label("b", 0), label("c", 1, model="other")]
    q = online_quality(payload, feedback, model="m", since=15)[("1", "stable")]
    assert (q.n, q.negatives, q.unmatched) == (1, 1, 1)  # a is before `since`; c belongs to another model
    # A label naming another model does not join this model's prediction of the same id.
    cross = online_quality([pred("a", [0.9])], [label("a", 1, model="other")])[("1", "stable")]
    assert (cross.n, cross.unmatched) == (0, 1)
    assert first_seen(payload, "1", "stable") == 10
    assert first_seen(payload, "1", "canary") is None


@pytest.mark.parametrize(
    ("payload", "feedback", "message"),
    [
        ([{"ts": 1, "request_id": "a", "variant": "stable"}], [], "without outputs"),
        ([{**pred("a", [0.1]), "record_version": 3}], [], "version 3"),
        ([pred("a", [0.1])], [{"ts": 1, "request_id": "a"}], "without label"),
        ([pred("a", [0.1])], [label("a", 2)], "0 or 1"),
        ([pred("a", [0.1])], [{**label("a", 1), "label": 1.0}], "0 or 1"),
    ],
)
def test_malformed_records_are_refused(payload: list[Any], feedback: list[Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        online_quality(payload, feedback)


def test_negative_ages_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="0 or more"):
        online_quality([], [], max_age_s=-1)
