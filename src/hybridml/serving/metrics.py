"""Prometheus metrics of a model server: requests, stage latencies, scores and bounded input summaries for drift."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from hybridml.core.profile import ReferenceProfile
from hybridml.core.schema import CATEGORY, FeatureSchema

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
SCORE_BUCKETS = (*(round(0.1 * i, 1) for i in range(1, 10)), 1.0)
STAGES = ("parse", "predict", "encode", "total")
# Scored rows queued before they are counted into the score histogram and input bins (a scrape counts them too).
FOLD_ROWS = 2048


class _ScoreAndInputCollector(Collector):
    """Score histogram and per-feature bin counts, accumulated in numpy and exported at scrape time.

    Observing each score or value through prometheus_client would cost a lock per value on the hot path.
    Batches are queued (a list append per request) and counted in one vectorised pass every ``FOLD_ROWS``
    rows and at every scrape, so a scrape always sees every row scored before it. Cardinality is bounded by the
    schema: per feature, its reference-profile bins (at most a dozen) plus one for missing values.
    """

    def __init__(
        self,
        model: str,
        version: str,
        variant: str,
        schema: FeatureSchema | None,
        profile: ReferenceProfile | None = None,
    ) -> None:
        self._labels = (model, version, variant)
        self._lock = threading.Lock()  # guards the queue of batches not counted yet
        self._count_lock = threading.Lock()  # guards the counts
        self._queue: list[tuple[np.ndarray, np.ndarray]] = []
        self._queued_rows = 0
        self._score_edges = np.asarray(SCORE_BUCKETS[:-1])
        binned = _binned_features(schema, profile) if schema is not None else []
        self._features = [name for name, _, _ in binned]
        self._columns = np.array([column for _, column, _ in binned], dtype=np.intp)
        self._n_bins = [len(thresholds) + 1 for _, _, thresholds in binned]
        width = max((len(thresholds) for _, _, thresholds in binned), default=0)
        # A value's bin is the number of its feature's thresholds at or below it; shorter threshold lists are
        # padded with +inf (never reached), and one more bin at the end counts missing values.
        self._edges = np.full((len(binned), width), np.inf)
        for i, (_, _, thresholds) in enumerate(binned):
            self._edges[i, : len(thresholds)] = thresholds
        self._bins = width + 2
        # Counts per label set: a worker relabelled by a promote keeps exporting what it counted before.
        self._series: dict[tuple[str, str, str], _Counts] = {}
        self._counts = self._series.setdefault(self._labels, self._new_counts())

    def _new_counts(self) -> _Counts:
        return _Counts(
            np.zeros(len(SCORE_BUCKETS), dtype=np.int64), np.zeros((len(self._features), self._bins), dtype=np.int64)
        )

    def relabel(self, labels: tuple[str, str, str]) -> None:
        """Count from now on under ``labels`` (model, version, variant); earlier counts stay under the old ones."""
        with self._lock:
            queue, self._queue, self._queued_rows = self._queue, [], 0
        self._fold(queue)
        with self._count_lock:
            self._labels = labels
            self._counts = self._series.setdefault(labels, self._new_counts())

    def observe(self, matrix: np.ndarray, scores: np.ndarray) -> None:
        """Queue a scored batch; it is counted in bulk once enough rows are queued, or at the next scrape."""
        with self._lock:
            self._queue.append((matrix, scores))
            self._queued_rows += len(scores)
            if self._queued_rows < FOLD_ROWS:
                return
            queue, self._queue, self._queued_rows = self._queue, [], 0
        self._fold(queue)

    def _fold(self, queue: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """Count the queued batches into the score histogram and input bins (one vectorised pass)."""
        if not queue:
            return
        if len(queue) == 1:
            matrix, scores = queue[0]
        else:
            matrix = np.concatenate([m for m, _ in queue])
            scores = np.concatenate([s for _, s in queue])
        score_bins = np.searchsorted(self._score_edges, scores, side="left")
        score_counts = np.bincount(score_bins, minlength=len(SCORE_BUCKETS))
        input_counts = None
        if self._features:
            values = matrix[:, self._columns]
            bins = (values[:, :, None] >= self._edges[None, :, :]).sum(axis=2)
            bins[np.isnan(values)] = self._bins - 1
            flat = bins + np.arange(len(self._features))[None, :] * self._bins
            shape = (len(self._features), self._bins)
            input_counts = np.bincount(flat.ravel(), minlength=shape[0] * shape[1]).reshape(shape)
        with self._count_lock:
            counts = self._counts
            counts.scores += score_counts
            counts.score_sum += float(scores.sum())
            if input_counts is not None:
                counts.inputs += input_counts

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            queue, self._queue, self._queued_rows = self._queue, [], 0
        self._fold(queue)
        with self._count_lock:
            series = [(labels, np.cumsum(c.scores), c.score_sum, c.inputs.copy()) for labels, c in self._series.items()]
        names = ["model", "version", "variant"]
        scores = HistogramMetricFamily(
            "hybridml_prediction_score", "Positive-class probability of each scored row.", labels=names
        )
        drift = CounterMetricFamily(
            "hybridml_input_bin",
            "Input values per feature by reference-profile bin: bin i of a numeric feature is [edge i, edge i+1) of"
            " the profile's edges (values outside count in the first or last bin), bin i of a category feature is"
            " its i-th category; 'missing': null/NaN or an unknown category.",
            labels=[*names, "feature", "bin"],
        )
        for labels, cumulative, score_sum, inputs in series:
            buckets = [
                (str(edge), float(count)) for edge, count in zip(SCORE_BUCKETS[:-1], cumulative[:-1], strict=True)
            ]
            buckets.append(("+Inf", float(cumulative[-1])))
            scores.add_metric(list(labels), buckets, score_sum)
            for i, feature in enumerate(self._features):
                for b in range(self._n_bins[i]):
                    drift.add_metric([*labels, feature, str(b)], float(inputs[i, b]))
                drift.add_metric([*labels, feature, "missing"], float(inputs[i, self._bins - 1]))
        yield scores
        yield drift


def _binned_features(
    schema: FeatureSchema, profile: ReferenceProfile | None
) -> list[tuple[str, int, tuple[float, ...]]]:
    """(feature, model-input column, thresholds) of every feature the server bins for drift.

    With a reference profile, numeric features use its inner edges, so the counts are binned exactly as
    :func:`hybridml.core.profile.bin_shares` bins the reference, and category features (encoded as their index
    in the schema) get one bin per category. A bundle saved before profiles existed falls back to the
    schema's training deciles for its numeric features.
    """
    binned = []
    for column, spec in enumerate(schema.features):
        if profile is None:
            if len(spec.quantiles) >= 2:
                binned.append((spec.name, column, tuple(spec.quantiles)))
        elif spec.name in profile.numeric:
            edges = profile.numeric[spec.name].edges
            if len(edges) >= 2:
                binned.append((spec.name, column, tuple(edges[1:-1])))
        elif spec.dtype == CATEGORY and spec.categories:
            binned.append((spec.name, column, tuple(i + 0.5 for i in range(len(spec.categories) - 1))))
    return binned


@dataclass
class _Counts:
    """Score histogram counts, their sum and the input bin counts of one label set."""

    scores: np.ndarray
    inputs: np.ndarray
    score_sum: float = 0.0


class ServingMetrics:
    """The metrics of one served variant, registered in ``registry`` (tests pass a fresh CollectorRegistry).

    Args:
        registry: where the metrics are registered.
        model: model name label.
        version: version label.
        variant: variant label (stable, canary, shadow); :meth:`relabel` changes it after a promote.
        schema: the feature schema of the served model (None: no input summaries).
        profile: the model's reference profile, whose bins the input counts use (None: the schema's deciles).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        model: str,
        version: str,
        variant: str,
        schema: FeatureSchema | None,
        profile: ReferenceProfile | None = None,
    ) -> None:
        self.registry = registry
        self.requests = Counter(
            "hybridml_requests",
            "Inference requests by model, version, variant and HTTP status code.",
            ["model", "version", "variant", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "hybridml_request_stage_seconds",
            "Time per request stage (parse: decode and validate; predict; encode: build the answer; total).",
            ["model", "version", "variant", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.rows = Counter("hybridml_rows", "Rows scored.", ["model", "version", "variant"], registry=registry)
        # Labels are bounded by the schema: one series per category feature, never per value.
        self.unknown = Counter(
            "hybridml_unknown_categories",
            "Category values the model's schema does not know (scored as missing), by feature.",
            ["model", "version", "variant", "feature"],
            registry=registry,
        )
        self._names = [f.name for f in schema.features] if schema is not None else []
        self._summary = _ScoreAndInputCollector(model, version, variant, schema, profile)
        registry.register(self._summary)
        self._bind((model, version, variant))

    def _bind(self, labels: tuple[str, str, str]) -> None:
        """Resolve the label children once, so the hot path never looks labels up."""
        self._labels = labels
        self._stage = {stage: self.latency.labels(*labels, stage) for stage in STAGES}
        self._rows = self.rows.labels(*labels)
        self._codes: dict[int, Counter] = {}
        self._unknown: dict[int, Counter] = {}

    def relabel(self, variant: str) -> None:
        """Label everything counted from now on with ``variant`` (the worker's role changed, e.g. promoted)."""
        labels = (self._labels[0], self._labels[1], variant)
        self._summary.relabel(labels)
        self._bind(labels)

    def request(self, code: int) -> None:
        """Count one request answered with ``code``."""
        child = self._codes.get(code)
        if child is None:
            child = self._codes[code] = self.requests.labels(*self._labels, str(code))
        child.inc()

    def stages(self, durations: Sequence[float]) -> None:
        """Observe (parse, predict, encode, total) durations in seconds."""
        for stage, seconds in zip(STAGES, durations, strict=True):
            self._stage[stage].observe(seconds)

    def scored(self, matrix: np.ndarray, scores: np.ndarray) -> None:
        """Record a scored batch: row count, score histogram and input bins."""
        self._rows.inc(len(scores))
        self._summary.observe(matrix, scores)

    def unknown_categories(self, found: Sequence[tuple[int, int]]) -> None:
        """Count unknown category values, given as (row, feature position) pairs."""
        for _, feature in found:
            child = self._unknown.get(feature)
            if child is None:
                child = self._unknown[feature] = self.unknown.labels(*self._labels, self._names[feature])
            child.inc()
