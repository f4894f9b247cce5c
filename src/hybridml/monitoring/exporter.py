"""The watch job: follows a payload log, recomputes drift over the last rows and exports it as Prometheus gauges.

Runs next to a model server (``hybridml monitor watch``). Every interval it reads the records appended since the
last read (following rotation: files are tracked by inode, so ``FILE`` renamed to ``FILE.1`` keeps its read
position), keeps the last N rows of the watched model and version, computes drift against the version's
reference profile and sets the gauges. With a feedback log it also sets the online ROC AUC per variant, from
:func:`hybridml.monitoring.feedback_join.online_quality`. Gauge names are fixed (docs/monitoring.md); alert rules
and dashboards read them.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Gauge

from hybridml.core.drift import DriftConfig, DriftResult, compute_drift
from hybridml.core.profile import ReferenceProfile
from hybridml.core.schema import FeatureSchema
from hybridml.errors import HybridmlError, InvalidInputError
from hybridml.monitoring.drift_window import DEFAULT_WINDOW, RowBuffer
from hybridml.serving.payload_log import log_files

_log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 30.0
# Feedback labels kept for the join: enough for a day of labels at ~1/s; older ones fall out first.
MAX_FEEDBACK = 100_000


class LogTail:
    """Reads a (rotated) JSON-lines log incrementally: each :meth:`read` returns the records appended since the last.

    Files are remembered by (device, inode) with the offset read up to, so a rotation (``FILE`` -> ``FILE.1``)
    neither re-reads nor skips lines. Only whole lines are read (a line being written is left for the next
    read); lines that are not JSON objects are counted in ``bad_lines`` and skipped: a watcher must not stop on
    one torn line.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._offsets: dict[tuple[int, int], int] = {}
        self.bad_lines = 0

    def read(self) -> list[dict[str, Any]]:
        """The records appended since the last call, oldest first."""
        records: list[dict[str, Any]] = []
        offsets: dict[tuple[int, int], int] = {}
        raced = False
        for file in log_files(self.path):
            try:
                handle = file.open("rb")
            except FileNotFoundError:  # rotated away between listing and opening: seen again next time
                raced = True
                continue
            with handle:
                status = os.fstat(handle.fileno())
                key = (status.st_dev, status.st_ino)
                offset = self._offsets.get(key, 0)
                if status.st_size < offset:  # truncated in place: start over
                    offset = 0
                handle.seek(offset)
                data = handle.read()
            end = data.rfind(b"\n") + 1
            for line in data[:end].splitlines():
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    self.bad_lines += 1
                    continue
                if isinstance(record, dict):
                    records.append(record)
                else:
                    self.bad_lines += 1
            offsets[key] = offset + end
        # Keep the offsets of files not seen only when a race may have hidden them; otherwise they are gone.
        self._offsets = {**self._offsets, **offsets} if raced else offsets
        return records


@dataclass(frozen=True)
class Gauges:
    """The exported gauges (names fixed: alert rules and dashboards use them), on one registry."""

    psi: Gauge
    pvalue: Gauge
    feature_drifted: Gauge
    detected: Gauge
    window_rows: Gauge
    prediction_psi: Gauge
    auc: Gauge
    auc_low: Gauge
    auc_high: Gauge
    labels: Gauge

    @classmethod
    def on(cls, registry: CollectorRegistry) -> Gauges:
        """Create the gauges on ``registry``."""
        feature = ("model", "version", "feature")
        model = ("model", "version")
        variant = ("model", "version", "variant")
        return cls(
            psi=Gauge(
                "hybridml_drift_psi", "PSI of a feature against the reference profile", feature, registry=registry
            ),
            pvalue=Gauge(
                "hybridml_drift_pvalue", "adjusted p-value of a feature's drift test", feature, registry=registry
            ),
            feature_drifted=Gauge(
                "hybridml_drift_feature_drifted", "1 when the feature drifted", feature, registry=registry
            ),
            detected=Gauge("hybridml_drift_detected", "1 when any feature drifted", model, registry=registry),
            window_rows=Gauge("hybridml_drift_window_rows", "rows in the drift window", model, registry=registry),
            prediction_psi=Gauge(
                "hybridml_prediction_psi", "PSI of the scores against the reference", model, registry=registry
            ),
            auc=Gauge("hybridml_online_roc_auc", "online ROC AUC from feedback labels", variant, registry=registry),
            auc_low=Gauge("hybridml_online_roc_auc_low", "95% interval, low end", variant, registry=registry),
            auc_high=Gauge("hybridml_online_roc_auc_high", "95% interval, high end", variant, registry=registry),
            labels=Gauge("hybridml_online_labels", "feedback labels joined", variant, registry=registry),
        )


class DriftExporter:
    """Recomputes drift (and online quality) of one model version and sets the gauges.

    Args:
        profile: the version's reference profile.
        schema: the version's feature schema.
        model: model name as the server logs it.
        version: version as the server logs it.
        payload_log: the server's payload log.
        feedback_log: the server's feedback log (online AUC gauges), or None.
        window: rows the drift is computed over (the last ones).
        interval_s: seconds between two computations (see :meth:`tick`).
        config: drift thresholds.
        registry: where the gauges live (a fresh one by default).
        clock: monotonic seconds; injectable so tests can step the job.
    """

    def __init__(
        self,
        *,
        profile: ReferenceProfile,
        schema: FeatureSchema,
        model: str,
        version: str,
        payload_log: str | Path,
        feedback_log: str | Path | None = None,
        window: int = DEFAULT_WINDOW,
        interval_s: float = DEFAULT_INTERVAL_S,
        config: DriftConfig | None = None,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not interval_s > 0:
            raise InvalidInputError(f"interval must be more than 0 seconds, got {interval_s}")
        self.profile = profile
        self.model = model
        self.version = version
        self.interval_s = interval_s
        self.config = config or DriftConfig()
        self.registry = registry or CollectorRegistry()
        self.gauges = Gauges.on(self.registry)
        self.clock = clock
        self._payload = LogTail(payload_log)
        self._buffer = RowBuffer(schema.names, window, model=model, version=version)
        self._feedback = LogTail(feedback_log) if feedback_log is not None else None
        # Records of every version and variant of this model: the canary's labels are joined too.
        self._records: collections.deque[dict[str, Any]] = collections.deque(maxlen=window)
        self._labels: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_FEEDBACK)
        self._last: float | None = None
        self.last_result: DriftResult | None = None
        self.quality_error: str | None = None
        self.steps = 0

    def tick(self) -> bool:
        """Run :meth:`step` if ``interval_s`` has passed on the clock since the last one (or never ran)."""
        now = self.clock()
        if self._last is not None and now - self._last < self.interval_s:
            return False
        self._last = now
        self.step()
        return True

    def step(self) -> DriftResult | None:
        """Read new records, recompute drift over the window and set the gauges; None while no row arrived."""
        self.steps += 1
        records = self._payload.read()
        self._buffer.add(records)
        self._records.extend(r for r in records if r.get("model") == self.model)
        rows = len(self._buffer)
        if self._feedback is not None:
            self._labels.extend(self._feedback.read())
            try:
                self._export_quality()
            except HybridmlError as exc:  # bad feedback must not stop the drift gauges
                self.quality_error = exc.message
                _log.warning("online quality failed: %s", exc.message)
            else:
                self.quality_error = None
        if rows == 0:
            self.gauges.window_rows.labels(self.model, self.version).set(0)
            return None
        window = self._buffer.window("payload log")
        result = compute_drift(self.profile, window.columns, window.scores, self.config)
        for name, feature in result.features.items():
            self.gauges.psi.labels(self.model, self.version, name).set(feature.psi)
            self.gauges.pvalue.labels(self.model, self.version, name).set(feature.adjusted_p)
            self.gauges.feature_drifted.labels(self.model, self.version, name).set(int(feature.drifted))
        self.gauges.detected.labels(self.model, self.version).set(int(result.drift))
        if result.prediction is not None:
            self.gauges.prediction_psi.labels(self.model, self.version).set(result.prediction.psi)
        # Last, so a scrape that sees the new row count sees the figures computed over those rows.
        self.gauges.window_rows.labels(self.model, self.version).set(rows)
        self.last_result = result
        return result

    def _export_quality(self) -> None:
        from hybridml.monitoring.feedback_join import online_quality  # written beside this job (issue 10, H2)

        quality = online_quality(list(self._records), list(self._labels), model=self.model)
        for (version, variant), q in quality.items():
            labels = (self.model, version, variant)
            self.gauges.labels.labels(*labels).set(q.n)
            for gauge, value in (
                (self.gauges.auc, q.auc),
                (self.gauges.auc_low, q.low),
                (self.gauges.auc_high, q.high),
            ):
                if value is None:  # a class is missing among the labels: no AUC rather than a made-up one
                    with contextlib.suppress(KeyError):
                        gauge.remove(*labels)
                else:
                    gauge.labels(*labels).set(value)

    def run(self, stop: threading.Event, poll_s: float = 0.5) -> None:
        """Tick until ``stop`` is set; a failed step is logged and retried at the next interval."""
        while not stop.is_set():
            try:
                self.tick()
            except HybridmlError as exc:
                _log.warning("drift step failed: %s", exc.message)
            except OSError as exc:  # an unreadable log file: say so, and try again at the next interval
                _log.warning("drift step failed: %s", exc)
            stop.wait(min(poll_s, self.interval_s))


def serve_metrics(registry: CollectorRegistry, port: int, host: str = "127.0.0.1") -> Any:
    """Serve ``registry`` on ``http://host:port/metrics`` in a thread; returns the server (``.shutdown()``)."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
