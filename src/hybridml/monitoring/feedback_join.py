"""Online quality: feedback labels joined with logged predictions by request id, ROC AUC per version and variant.

The join (documented in docs/monitoring.md, "Online quality"):

* A label names a request by its ``request_id``. It joins the **latest** logged prediction with that id made at
  or before the label arrived (``ts``), so a request id a client reuses later is labelled in the right request,
  and a label that names no earlier prediction is **unmatched**. A label whose feedback record names a ``model``
  joins only predictions of that model.
* **Rows.** A label for a one-row request labels that row. A request of several rows is labelled row by row with
  the id ``REQUEST_ID#k`` (``k`` from 0, in request order); a plain label on a several-row request cannot say
  which row it means and is counted **ambiguous** (not joined). An id that exists as such in the payload log
  always means that request, even if it contains ``#``.
* **Variants.** The router logs a request copied to the shadow twice under one id (its served variant, stable or
  canary, and ``shadow``). A label joins both; the shadow's rows are reported under their own key
  ``(version, "shadow")`` and never mixed into the stable or canary figures.
* **Late labels.** Labels arrive after their prediction. One that arrives within ``max_age_s`` is joined; one
  that arrives later is **expired** (not joined). A joined label that arrived more than ``late_after_s`` after
  its prediction is counted **late** (it is still used).
* **Duplicates.** When a row is labelled more than once, the **last** label (latest ``ts``, then last in the
  file) wins: feedback is how ground truth is corrected, and a correction comes after the first answer. Every
  extra label is counted as a **duplicate**, and a duplicate whose value differs from the label it replaces as a
  **conflict**.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hybridml.core.quality import AucEstimate, roc_auc_delong
from hybridml.errors import InvalidInputError

DEFAULT_MAX_AGE_S = 7 * 24 * 3600.0
DEFAULT_LATE_AFTER_S = 300.0
ROW_SEPARATOR = "#"
SHADOW = "shadow"
_KNOWN_RECORD_VERSIONS = (1, 2)


@dataclass(frozen=True)
class OnlineQuality:
    """Online ROC AUC of one (version, variant) from the labels joined to its logged predictions.

    Attributes:
        auc: ROC AUC of the joined rows; None when a class is missing among the labels.
        low: lower end of the 95 % DeLong interval (None with ``auc``).
        high: upper end of the 95 % DeLong interval (None with ``auc``).
        n: labelled rows joined.
        positives: joined rows labelled positive.
        negatives: joined rows labelled negative.
        se: DeLong standard error of ``auc`` (None without ``auc`` or with a class of one row).
        late: joined labels that arrived more than ``late_after_s`` after the prediction.
        expired: labels for this version and variant that arrived more than ``max_age_s`` after the prediction.
        duplicates: labels that replaced an earlier label of the same row (the last one wins).
        conflicts: duplicates whose value differed from the label they replaced.
        unmatched: labels of the whole feedback log that match no logged prediction (they cannot be attributed
            to a variant, so every entry reports the same count).
        ambiguous: labels of the whole feedback log that name a several-row request without a row (same in
            every entry).
    """

    auc: float | None
    low: float | None
    high: float | None
    n: int
    positives: int
    negatives: int
    se: float | None = None
    late: int = 0
    expired: int = 0
    duplicates: int = 0
    conflicts: int = 0
    unmatched: int = 0
    ambiguous: int = 0

    @property
    def positive_rate(self) -> float | None:
        """Share of joined rows labelled positive (a business metric such as a conversion rate)."""
        return self.positives / self.n if self.n else None

    def estimate(self) -> AucEstimate | None:
        """The AUC as a :class:`~hybridml.core.quality.AucEstimate` for the difference tests (None without one)."""
        if self.auc is None or self.low is None or self.high is None:
            return None
        return AucEstimate(self.auc, self.se, self.low, self.high, self.positives, self.negatives)


@dataclass
class _Group:
    labels: dict[tuple[int, int], tuple[float, int, float]] = field(default_factory=dict)  # row -> (ts, label, score)
    late: int = 0
    expired: int = 0
    duplicates: int = 0
    conflicts: int = 0


@dataclass(frozen=True)
class _Prediction:
    ts: float
    model: str
    version: str
    variant: str
    outputs: list[float]
    index: int  # position in the payload log, to tell two records apart


def _check(record: Mapping[str, Any], what: str, fields: tuple[str, ...]) -> None:
    missing = [f for f in fields if f not in record]
    if missing:
        raise InvalidInputError(f"{what} record without {', '.join(missing)}: {str(dict(record))[:200]}")


def _index(payload_records: Iterable[Mapping[str, Any]], since: float | None) -> dict[str, list[_Prediction]]:
    """Predictions by request id, each list sorted by time."""
    by_id: dict[str, list[_Prediction]] = {}
    for i, record in enumerate(payload_records):
        version = record.get("record_version", 1)
        if version not in _KNOWN_RECORD_VERSIONS:
            raise InvalidInputError(f"payload record version {version!r} is not one this reader knows (1, 2)")
        _check(record, "payload", ("ts", "request_id", "variant", "outputs"))
        ts = float(record["ts"])
        if since is not None and ts < since:
            continue
        prediction = _Prediction(
            ts=ts,
            model=str(record.get("model", "")),
            version=str(record.get("version", "")),
            variant=str(record["variant"]),
            outputs=[float(v) for v in record["outputs"]],
            index=i,
        )
        by_id.setdefault(str(record["request_id"]), []).append(prediction)
    for predictions in by_id.values():
        predictions.sort(key=lambda p: (p.ts, p.index))
    return by_id


def _latest_before(predictions: list[_Prediction], ts: float) -> dict[bool, _Prediction]:
    """The latest prediction at or before ``ts``, for the served role (False) and the shadow (True)."""
    found: dict[bool, _Prediction] = {}
    end = bisect.bisect_right([p.ts for p in predictions], ts)
    for prediction in reversed(predictions[:end]):
        found.setdefault(prediction.variant == SHADOW, prediction)
        if len(found) == 2:
            break
    return found


def online_quality(
    payload_records: Iterable[Mapping[str, Any]],
    feedback_records: Iterable[Mapping[str, Any]],
    *,
    max_age_s: float = DEFAULT_MAX_AGE_S,
    late_after_s: float = DEFAULT_LATE_AFTER_S,
    since: float | None = None,
    model: str | None = None,
) -> dict[tuple[str, str], OnlineQuality]:
    """Join feedback labels to logged predictions and compute the online ROC AUC per (version, variant).

    Args:
        payload_records: payload-log records (``hybridml.serving.payload_log.read_records``), versions 1 and 2.
        feedback_records: feedback-log records: ``request_id``, ``label`` (0/1, 1 = the positive class), ``ts``
            and optionally ``model``.
        max_age_s: labels arriving later than this after their prediction are expired, not joined.
        late_after_s: joined labels arriving later than this after their prediction are counted late.
        since: leave out predictions made before this time (seconds since the epoch); None keeps all.
        model: keep only predictions and labels of this model; None keeps all.

    Returns:
        One entry per (version, variant) that has logged predictions, labelled or not, in sorted order.

    Raises:
        InvalidInputError: a record without the fields the join needs, a label that is not 0/1, a payload
            record version this reader does not know, or a negative age.
    """
    if max_age_s < 0 or late_after_s < 0:
        raise InvalidInputError("max_age_s and late_after_s must be 0 or more")
    payload = payload_records if model is None else (r for r in payload_records if r.get("model") == model)
    by_id = _index(payload, since)
    groups: dict[tuple[str, str], _Group] = {}
    for predictions in by_id.values():
        for p in predictions:
            groups.setdefault((p.version, p.variant), _Group())
    labels = []
    for i, record in enumerate(feedback_records):
        _check(record, "feedback", ("ts", "request_id", "label"))
        if record["label"] not in (0, 1) or isinstance(record["label"], float):
            raise InvalidInputError(f"feedback label must be 0 or 1, got {record['label']!r}")
        if model is not None and record.get("model", model) != model:
            continue
        labels.append((float(record["ts"]), i, record))
    labels.sort(key=lambda item: (item[0], item[1]))  # the last one wins: replay in time order
    unmatched = ambiguous = 0
    for ts, _, record in labels:
        request_id, label = str(record["request_id"]), int(record["label"])
        row: int | None = None
        candidates = by_id.get(request_id)
        if candidates is None and ROW_SEPARATOR in request_id:
            base, _, suffix = request_id.rpartition(ROW_SEPARATOR)
            if suffix.isdigit() and base in by_id:
                candidates, row = by_id[base], int(suffix)
        if record.get("model") is not None and candidates is not None:
            candidates = [p for p in candidates if p.model == record["model"]]
        targets = _latest_before(candidates or [], ts)
        joined = False
        for prediction in targets.values():
            if row is None and len(prediction.outputs) != 1:
                ambiguous += 1
                joined = True  # counted once as ambiguous, not again as unmatched
                break
            index = 0 if row is None else row
            if index >= len(prediction.outputs):
                continue
            joined = True
            group = groups[(prediction.version, prediction.variant)]
            delay = ts - prediction.ts
            if delay > max_age_s:
                group.expired += 1
                continue
            if delay > late_after_s:
                group.late += 1
            cell = (prediction.index, index)
            previous = group.labels.get(cell)
            if previous is not None:
                group.duplicates += 1
                group.conflicts += previous[1] != label
            group.labels[cell] = (ts, label, prediction.outputs[index])
        if not joined:
            unmatched += 1
    result = {}
    for key in sorted(groups):
        group = groups[key]
        values = list(group.labels.values())
        y = np.array([v[1] for v in values], dtype=int)
        scores = np.array([v[2] for v in values], dtype=float)
        estimate = roc_auc_delong(y, scores)
        positives = int(y.sum())
        result[key] = OnlineQuality(
            auc=estimate.auc if estimate else None,
            low=estimate.low if estimate else None,
            high=estimate.high if estimate else None,
            n=len(values),
            positives=positives,
            negatives=len(values) - positives,
            se=estimate.se if estimate else None,
            late=group.late,
            expired=group.expired,
            duplicates=group.duplicates,
            conflicts=group.conflicts,
            unmatched=unmatched,
            ambiguous=ambiguous,
        )
    return result


def first_seen(
    payload_records: Iterable[Mapping[str, Any]], version: str, variant: str, *, after: float | None = None
) -> float | None:
    """When ``version`` first answered as ``variant`` in the payload log, after ``after`` if given (None: never)."""
    times = [
        float(r["ts"])
        for r in payload_records
        if str(r.get("version", "")) == version
        and r.get("variant") == variant
        and (after is None or float(r["ts"]) > after)
    ]
    return min(times) if times else None
