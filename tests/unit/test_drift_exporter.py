"""The watch job: incremental log reading across rotation, the window, the clock and the exported gauges."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from hybridml.core.data import infer_schema
from hybridml.core.profile import build_profile
from hybridml.core.schema import FeatureSchema
from hybridml.errors import InvalidInputError
from hybridml.monitoring.drift_window import RowBuffer
from hybridml.monitoring.exporter import DriftExporter, LogTail
from hybridml.serving.payload_log import JsonLinesLog, payload_record

N = 600


def _frame(rng: np.random.Generator, n: int = N) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.normal(size=n),
            "color": rng.choice(["red", "green"], size=n),
            "y": rng.choice(["no", "yes"], size=n),
        }
    )


@pytest.fixture(scope="module")
def reference() -> tuple[Any, FeatureSchema]:
    frame = _frame(np.random.default_rng(1))
    schema = infer_schema(frame, "y")
    return build_profile(frame, schema, np.random.default_rng(2).uniform(size=N)), schema


def _write(log: JsonLinesLog, frame: pd.DataFrame, *, model: str = "m", version: str = "1", per: int = 20) -> None:
    rows = frame.drop(columns=["y"]).to_dict(orient="records")
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        scores = np.random.default_rng(start).uniform(size=len(chunk))
        record = payload_record(f"r{start}", model, version, "stable", "sha256:x", chunk, [[]] * len(chunk), scores)
        log.write(record)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_log_tail_reads_each_line_once_across_rotation(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    log = JsonLinesLog(path, max_bytes=200, keep=3)
    tail = LogTail(path)
    log.write({"i": 0, "pad": "x" * 150})
    log.write({"i": 1, "pad": "x" * 150})  # rotates: p.jsonl -> p.jsonl.1
    assert [r["i"] for r in tail.read()] == [0, 1]
    assert tail.read() == []
    for i in range(2, 6):
        log.write({"i": i, "pad": "x" * 150})
    assert [r["i"] for r in tail.read()] == [2, 3, 4, 5]
    with path.open("ab") as handle:  # a line being written, and one that is not JSON
        handle.write(b'not json\n{"i": 6')
    assert tail.read() == []
    assert tail.bad_lines == 1
    with path.open("ab") as handle:
        handle.write(b"}\n[1]\n")
    assert [r["i"] for r in tail.read()] == [6]
    assert tail.bad_lines == 2  # a JSON line that is not an object
    log.close()


def test_row_buffer_keeps_the_last_rows_of_one_model_and_version() -> None:
    buffer = RowBuffer(["a", "b"], 3, model="m", version="2")
    record = {"record_version": 2, "model": "m", "version": "2", "inputs": [{"a": 1}, {"a": 2, "b": 5}]}
    buffer.add(
        [
            {**record, "outputs": [0.1, 0.2]},
            {**record, "version": "1", "outputs": [0.3, 0.4]},  # another version
            {**record, "model": "other", "outputs": [0.3, 0.4]},  # another model
            {"record_version": 1, "model": "m", "version": "2", "inputs": [[1.0]], "outputs": [0.5]},
            {**record, "inputs": [{"a": 3}, {"a": 4}], "outputs": [0.6, None]},
        ]
    )
    window = buffer.window("test")
    assert window.rows == 3
    assert window.columns == {"a": [2, 3, 4], "b": [5, None, None]}
    assert window.scores is not None and np.allclose(window.scores, [0.2, 0.6, np.nan], equal_nan=True)
    assert window.skipped == 1
    assert window.notes == ["left out 1 payload record(s) of another record format"]
    with pytest.raises(InvalidInputError, match="window must be a whole number of rows of 1 or more, got 0"):
        RowBuffer(["a"], 0)


def test_the_job_steps_on_its_clock_and_exports_the_gauges(
    tmp_path: Path, reference: tuple[Any, FeatureSchema]
) -> None:
    profile, schema = reference
    path = tmp_path / "payload.jsonl"
    log = JsonLinesLog(path)
    clock, registry = Clock(), CollectorRegistry()
    job = DriftExporter(
        profile=profile,
        schema=schema,
        model="m",
        version="1",
        payload_log=path,
        window=400,
        interval_s=10.0,
        registry=registry,
        clock=clock,
    )
    assert job.tick() is True  # the first tick always runs
    assert _value(registry, "hybridml_drift_window_rows", model="m", version="1") == 0.0
    assert _value(registry, "hybridml_drift_detected", model="m", version="1") is None  # no rows: no verdict
    _write(log, _frame(np.random.default_rng(3), 400))
    clock.now = 9.9
    assert job.tick() is False  # the interval has not passed
    assert _value(registry, "hybridml_drift_window_rows", model="m", version="1") == 0.0
    clock.now = 10.0
    assert job.tick() is True
    assert _value(registry, "hybridml_drift_window_rows", model="m", version="1") == 400.0
    assert _value(registry, "hybridml_drift_detected", model="m", version="1") == 0.0
    for feature in ("a", "b", "color"):
        labels = {"model": "m", "version": "1", "feature": feature}
        assert _value(registry, "hybridml_drift_feature_drifted", **labels) == 0.0
        psi = _value(registry, "hybridml_drift_psi", **labels)
        assert psi is not None and 0.0 <= psi < 0.1
        pvalue = _value(registry, "hybridml_drift_pvalue", **labels)
        assert pvalue is not None and 0.05 <= pvalue <= 1.0
    assert _value(registry, "hybridml_prediction_psi", model="m", version="1") is not None
    shifted = _frame(np.random.default_rng(4), 400)
    shifted["b"] = shifted["b"] + 1.5
    _write(log, shifted)
    _write(log, _frame(np.random.default_rng(5), 200), version="2")  # another version: not in this window
    clock.now = 25.0
    assert job.tick() is True
    assert job.last_result is not None and job.last_result.drifted_features == ["b"]
    assert _value(registry, "hybridml_drift_detected", model="m", version="1") == 1.0
    assert _value(registry, "hybridml_drift_feature_drifted", model="m", version="1", feature="b") == 1.0
    assert _value(registry, "hybridml_drift_feature_drifted", model="m", version="1", feature="a") == 0.0
    assert _value(registry, "hybridml_drift_window_rows", model="m", version="1") == 400.0
    assert job.steps == 3
    log.close()


def test_the_job_exports_online_auc_per_variant(tmp_path: Path, reference: tuple[Any, FeatureSchema]) -> None:
    profile, schema = reference
    payload, feedback = tmp_path / "payload.jsonl", tmp_path / "feedback.jsonl"
    log, labels = JsonLinesLog(payload), JsonLinesLog(feedback)
    rng = np.random.default_rng(6)
    frame = _frame(rng, 40).drop(columns=["y"]).to_dict(orient="records")
    for i, row in enumerate(frame):
        record = payload_record(f"q{i}", "m", "1", "stable", "sha256:x", [row], [[]], np.array([i / 40]))
        log.write(record)
        labels.write({"ts": record["ts"] + 1, "request_id": f"q{i}", "label": int(i >= 20), "model": "m"})
    registry = CollectorRegistry()
    job = DriftExporter(
        profile=profile,
        schema=schema,
        model="m",
        version="1",
        payload_log=payload,
        feedback_log=feedback,
        registry=registry,
        clock=Clock(),
    )
    job.step()
    variant = {"model": "m", "version": "1", "variant": "stable"}
    assert _value(registry, "hybridml_online_labels", **variant) == 40.0
    assert _value(registry, "hybridml_online_roc_auc", **variant) == 1.0  # scores rank the labels perfectly
    low, high = (
        _value(registry, "hybridml_online_roc_auc_low", **variant),
        _value(registry, "hybridml_online_roc_auc_high", **variant),
    )
    assert low is not None and high is not None and low <= 1.0 <= high
    assert job.quality_error is None
    labels.write({"ts": 1.0, "request_id": "q0", "label": 7})  # a bad label: reported, drift still computed
    job.step()
    assert job.quality_error is not None and "label must be 0 or 1" in job.quality_error
    assert _value(registry, "hybridml_drift_window_rows", model="m", version="1") == 40.0
    log.close()
    labels.close()


def test_the_job_refuses_a_zero_interval(tmp_path: Path, reference: tuple[Any, FeatureSchema]) -> None:
    profile, schema = reference
    with pytest.raises(InvalidInputError, match="interval must be more than 0 seconds, got 0"):
        DriftExporter(profile=profile, schema=schema, model="m", version="1", payload_log=tmp_path / "p", interval_s=0)
    assert not os.path.exists(tmp_path / "p")


def test_the_job_runs_without_pandas(tmp_path: Path, reference: tuple[Any, FeatureSchema]) -> None:
    """The predictor image has no pandas: drift over logged rows must not need it."""
    import json
    import subprocess
    import sys

    profile, schema = reference
    (tmp_path / "profile.json").write_text(json.dumps(profile.to_dict()))
    (tmp_path / "schema.json").write_text(json.dumps(schema.to_dict()))
    log = JsonLinesLog(tmp_path / "payload.jsonl")
    _write(log, _frame(np.random.default_rng(7), 200))
    log.close()
    code = f"""
import json, sys
sys.modules["pandas"] = None  # any import of pandas now fails
from pathlib import Path
from hybridml.core.profile import ReferenceProfile
from hybridml.core.schema import FeatureSchema
from hybridml.monitoring.exporter import DriftExporter
root = Path({str(tmp_path)!r})
job = DriftExporter(
    profile=ReferenceProfile.from_dict(json.loads((root / "profile.json").read_text())),
    schema=FeatureSchema.from_dict(json.loads((root / "schema.json").read_text())),
    model="m", version="1", payload_log=root / "payload.jsonl",
)
result = job.step()
print(json.dumps([result.rows, result.drift, sorted(result.features)]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [200, False, ["a", "b", "color"]]
