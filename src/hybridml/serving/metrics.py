"""Prometheus metrics of a model server: requests, stage latencies, scores and bounded input summaries for drift."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from hybridml.core.schema import FeatureSchema

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
SCORE_BUCKETS = (*(round(0.1 * i, 1) for i in range(1, 10)), 1.0)
STAGES = ("parse", "predict", "encode", "total")
# Scored rows queued before they are counted into the score histogram and input bins (a scrape counts them too).
FOLD_ROWS = 2048


class _ScoreAndInputCollector(Collector):
    """Score histogram and per-feature decile counts, accumulated in numpy and exported at scrape time.

    Observing each score or value through prometheus_client would cost a lock per value on the hot path.
    Batches are queued (a list append per request) and counted in one vectorised pass every ``FOLD_ROWS``
    rows and at every scrape, so a scrape always sees every row scored before it. Cardinality is bounded:
    features x 12 bins.
    """

    def __init__(self, model: str, version: str, variant: str, schema: FeatureSchema | None) -> None:
        self._labels = (model, version, variant)
        self._lock = threading.Lock()  # guards the queue of batches not counted yet
        self._count_lock = threading.Lock()  # guards the counts
        self._queue: list[tuple[np.ndarray, np.ndarray]] = []
        self._queued_rows = 0
        self._score_edges = np.asarray(SCORE_BUCKETS[:-1])
        self._score_counts = np.zeros(len(SCORE_BUCKETS), dtype=np.int64)
        self._score_sum = 0.0
        self._features: list[str] = []
        self._edges = np.zeros((0, 0))
        if schema is not None:
            specs = [f for f in schema.features if len(f.quantiles) >= 2]
            width = max((len(f.quantiles) for f in specs), default=0)
            self._features = [f.name for f in specs]
            self._columns = np.array([schema.names.index(f.name) for f in specs], dtype=np.intp)
            # Pad shorter quantile lists with +inf so every feature has the same number of bins.
            self._edges = np.full((len(specs), width), np.inf)
            for i, spec in enumerate(specs):
                self._edges[i, : len(spec.quantiles)] = spec.quantiles
        # Bin 0: below the first training decile ... last bin: above the last; one more for missing values.
        self._bins = self._edges.shape[1] + 2
        self._input_counts = np.zeros((len(self._features), self._bins), dtype=np.int64)

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
            bins = (values[:, :, None] > self._edges[None, :, :]).sum(axis=2)
            bins[np.isnan(values)] = self._bins - 1
            flat = bins + np.arange(len(self._features))[None, :] * self._bins
            shape = self._input_counts.shape
            input_counts = np.bincount(flat.ravel(), minlength=self._input_counts.size).reshape(shape)
        with self._count_lock:
            self._score_counts += score_counts
            self._score_sum += float(scores.sum())
            if input_counts is not None:
                self._input_counts += input_counts

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            queue, self._queue, self._queued_rows = self._queue, [], 0
        self._fold(queue)
        with self._count_lock:
            cumulative = np.cumsum(self._score_counts)
            score_sum = self._score_sum
            inputs = self._input_counts.copy()
        names = ["model", "version", "variant"]
        scores = HistogramMetricFamily(
            "hybridml_prediction_score", "Positive-class probability of each scored row.", labels=names
        )
        buckets = [(str(edge), float(count)) for edge, count in zip(SCORE_BUCKETS[:-1], cumulative[:-1], strict=True)]
        buckets.append(("+Inf", float(cumulative[-1])))
        scores.add_metric(list(self._labels), buckets, score_sum)
        yield scores
        drift = CounterMetricFamily(
            "hybridml_input_bin",
            "Input values per feature by training-decile bin (0: below the first decile; 'missing': null/NaN).",
            labels=[*names, "feature", "bin"],
        )
        for i, feature in enumerate(self._features):
            for b in range(self._bins):
                label = "missing" if b == self._bins - 1 else str(b)
                drift.add_metric([*self._labels, feature, label], float(inputs[i, b]))
        yield drift


class ServingMetrics:
    """The metrics of one served variant, registered in ``registry`` (tests pass a fresh CollectorRegistry).

    Args:
        registry: where the metrics are registered.
        model: model name label.
        version: version label.
        variant: variant label (stable, canary, shadow).
        schema: the feature schema whose training deciles define the input bins (None: no input summaries).
    """

    def __init__(
        self, registry: CollectorRegistry, model: str, version: str, variant: str, schema: FeatureSchema | None
    ) -> None:
        self.registry = registry
        self._labels = (model, version, variant)
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
        self._stage = {stage: self.latency.labels(*self._labels, stage) for stage in STAGES}
        self._rows = self.rows.labels(*self._labels)
        self._codes: dict[int, Counter] = {}
        self._summary = _ScoreAndInputCollector(model, version, variant, schema)
        registry.register(self._summary)

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
