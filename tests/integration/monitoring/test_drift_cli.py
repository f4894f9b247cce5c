"""`hybridml monitor drift` and `monitor watch` on a registered model, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hybridml.adapters.tracking import Tracker
from hybridml.core.data import builtin_breast_cancer, encode_features, encode_labels, infer_schema
from hybridml.core.model import fit, positive_scores, save_bundle
from hybridml.core.profile import build_profile
from hybridml.registry import Registry
from hybridml.serving.payload_log import JsonLinesLog, payload_record

HYBRIDML = Path(sys.executable).with_name("hybridml")
NAME = "cancer"
SHIFTED = ("mean_radius", "worst_texture")


@dataclass(frozen=True)
class Registered:
    home: Path
    tracking_uri: str
    frame: pd.DataFrame  # the training table (the reference), target included
    target: str
    reference_csv: Path
    shifted_csv: Path
    training_run_id: str


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Registered:
    """A version of NAME trained on the breast-cancer table, registered and approved in a fresh home."""
    home = tmp_path_factory.mktemp("home")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    frame, target = builtin_breast_cancer()
    schema = infer_schema(frame, target)
    X = encode_features(frame, schema)
    model = fit("xgboost", {"n_estimators": 10, "max_depth": 3}, X, encode_labels(frame, schema))
    profile = build_profile(frame, schema, positive_scores(model, X))
    bundle = save_bundle(model, "xgboost", {"n_estimators": 10}, schema, home / "bundle", profile=profile)
    tracker = Tracker(uri, "cancer-training")  # not the default experiment: the drift run must go beside this one
    run_id = tracker.start_run("train", {"hybridml.role": "train"})
    registry = Registry(uri, user="test")
    version = registry.register(
        NAME, registry.log_bundle(run_id, bundle), run_id=run_id, run_key="test/direct", tags={}
    ).version
    registry.set_status(NAME, version, "Approved", reason="drift tests")
    reference_csv, shifted_csv = home / "reference.csv", home / "shifted.csv"
    frame.to_csv(reference_csv, index=False)
    shifted = frame.copy()
    for name in SHIFTED:
        shifted[name] = shifted[name] + frame[name].std()
    shifted.drop(columns=[target]).to_csv(shifted_csv, index=False)  # no target column: still accepted
    return Registered(home, uri, frame, target, reference_csv, shifted_csv, run_id)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYBRIDML_"))}
    # As a user's shell would: commands go to the home's warm background process (stopped at teardown), so
    # each one costs a fork rather than importing MLflow again.
    env.update({"HYBRIDML_DAEMON": "1", "HYBRIDML_DAEMON_IDLE_S": "120"})
    return env


@pytest.fixture(scope="module", autouse=True)
def _daemon_stopped(registered: Registered) -> Iterator[None]:
    yield
    subprocess.run([str(HYBRIDML), "--home", str(registered.home), "daemon", "stop"], env=_env(), check=False)


def _cli(registered: Registered, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HYBRIDML), "--home", str(registered.home), "monitor", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        check=False,
    )


def test_reference_data_does_not_drift(registered: Registered) -> None:
    result = _cli(registered, "drift", "--model", f"{NAME}@champion", "--data", str(registered.reference_csv), "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)  # exactly one JSON object
    assert payload["drift"] is False
    assert payload["drifted_features"] == []
    assert (payload["model"], payload["version"], payload["rows"]) == (NAME, 1, len(registered.frame))
    features = [c for c in registered.frame.columns if c != registered.target]
    assert list(payload["features"]) == features  # the target is not a feature
    assert all(f["test"] == "ks" and f["psi"] < 0.01 and not f["drifted"] for f in payload["features"].values())
    assert payload["prediction"]["test"] in ("ks", "chi2")
    assert payload["report"] is None and payload["mlflow_run_id"] is None


def test_shifted_data_drifts_naming_only_the_shifted_features(registered: Registered, tmp_path: Path) -> None:
    report = tmp_path / "out" / "drift.html"
    result = _cli(
        registered,
        "drift",
        "--model",
        f"{NAME}/1",
        "--data",
        str(registered.shifted_csv),
        "--json",
        "--report",
        str(report),
        "--log-to-mlflow",
    )
    assert result.returncode == 0, result.stderr  # drift is a finding, not an error
    payload = json.loads(result.stdout)
    assert payload["drift"] is True
    assert payload["drifted_features"] == list(SHIFTED)
    for name in SHIFTED:
        f = payload["features"][name]
        assert f["drifted"] is True and f["psi"] >= 0.1 and f["adjusted_p"] < 0.05
    assert sum(f["drifted"] for f in payload["features"].values()) == 2
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("data:image/png;base64,") == len(payload["features"]) + 1  # + the scores
    assert "Drift</b>: mean_radius, worst_texture" in page
    import mlflow

    client = mlflow.MlflowClient(registered.tracking_uri)
    run = client.get_run(payload["mlflow_run_id"])
    assert run.data.tags["hybridml.role"] == "drift"
    assert run.data.tags["hybridml.model"] == NAME and run.data.tags["hybridml.model_version"] == "1"
    assert run.data.metrics["drift"] == 1.0 and run.data.metrics["drifted_features"] == 2.0
    assert run.data.metrics["psi.mean_radius"] == pytest.approx(payload["features"]["mean_radius"]["psi"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["hybridml.training_run_id"] == registered.training_run_id
    assert run.info.experiment_id == client.get_run(registered.training_run_id).info.experiment_id
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "drift")}
    assert artifacts == {"drift/report.html", "drift/result.json"}
    events = Registry(registered.tracking_uri, user="test").history(NAME, 1)
    monitor = [e for e in events if e.action == "monitor"]
    assert len(monitor) == 1
    assert monitor[0].detail == "drift: 2 of 30 features drifted (mean_radius, worst_texture)"
    assert json.loads(monitor[0].reason)["run"] == payload["mlflow_run_id"]


def _log_rows(path: Path, frame: pd.DataFrame, *, version: str = "1", per: int = 10, prefix: str = "r") -> None:
    log = JsonLinesLog(path)
    rows = frame.to_dict(orient="records")
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        scores = np.full(len(chunk), 0.5)
        log.write(
            payload_record(f"{prefix}{start}", NAME, version, "stable", "sha256:x", chunk, [[]] * len(chunk), scores)
        )
    log.close()


def test_drift_over_the_last_rows_of_a_payload_log(registered: Registered, tmp_path: Path) -> None:
    features = registered.frame.drop(columns=[registered.target])
    shifted = features.copy()
    for name in SHIFTED:
        shifted[name] = shifted[name] + features[name].std()
    window = str(len(features))
    calm, moved = tmp_path / "calm.jsonl", tmp_path / "moved.jsonl"
    _log_rows(calm, shifted)  # older rows: shifted, out of the window
    _log_rows(calm, features)  # the newest rows of version 1: the reference
    _log_rows(calm, shifted.iloc[:200], version="2")  # newer still, but another version: left out
    result = _cli(registered, "drift", "--model", f"{NAME}/1", "--payload-log", str(calm), "--window", window, "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert (payload["drift"], payload["rows"]) == (False, len(features))
    assert payload["source"] == f"payload log {calm}"
    assert payload["prediction"]["present"] == len(features)
    _log_rows(moved, features)
    _log_rows(moved, shifted)
    result = _cli(
        registered, "drift", "--model", f"{NAME}/1", "--payload-log", str(moved), "--window", window, "--json"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["drifted_features"] == list(SHIFTED)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ((), 2, "give the rows to compare with --data FILE or --payload-log FILE (one of them)"),
        (("--data", "{csv}", "--payload-log", "{csv}"), 2, "(one of them)"),
        (("--data", "{missing}"), 3, "data file not found"),
        (("--data", "{bad}"), 2, "has no column for feature(s) ['mean_radius']"),
        (("--data", "{csv}", "--alpha", "1.5"), 2, "alpha must be between 0 and 1 (exclusive), got 1.5"),
        (("--data", "{csv}", "--window", "0"), 2, "window must be a whole number of rows of 1 or more, got 0"),
        (("--payload-log", "{foreign}"), 2, "holds no rows of model 'cancer' version 1"),
    ],
    ids=["no rows", "both sources", "missing file", "missing feature", "bad alpha", "zero window", "foreign log"],
)
def test_bad_input_is_one_line_and_exit_2(
    registered: Registered, tmp_path: Path, args: tuple[str, ...], code: int, message: str
) -> None:
    bad = tmp_path / "bad.csv"
    registered.frame.drop(columns=["mean_radius"]).to_csv(bad, index=False)
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"record_version": 2, "model": "other"}\n')
    paths = {"csv": registered.reference_csv, "missing": tmp_path / "nope.csv", "bad": bad, "foreign": foreign}
    filled = [a.format(**paths) for a in args]
    result = _cli(registered, "drift", "--model", f"{NAME}@champion", *filled, "--json")
    assert result.returncode == code, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


@pytest.fixture
def watch(registered: Registered, tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    payload, feedback = tmp_path / "payload.jsonl", tmp_path / "feedback.jsonl"
    payload.touch()
    feedback.touch()
    command = [str(HYBRIDML), "--home", str(registered.home), "monitor", "watch", "--model", f"{NAME}@champion"]
    command += ["--payload-log", str(payload), "--feedback-log", str(feedback), "--window", "400"]
    process = subprocess.Popen(
        [*command, "--interval", "0.2", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            pytest.fail(f"watch exited: {process.wait(timeout=5)}: {process.stderr.read() if process.stderr else ''}")
        where = json.loads(line)
        assert where["metrics"].startswith("http://127.0.0.1:")
        assert (where["model"], where["version"]) == (NAME, 1)
        yield where["metrics"], payload, feedback
    finally:
        process.terminate()
        assert process.wait(timeout=15) == 0  # stops cleanly on SIGTERM


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _until(
    url: str, key: tuple[str, tuple[tuple[str, str], ...]], value: float
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    deadline = time.monotonic() + 30
    while True:
        samples = _scrape(url)
        if samples.get(key) == value or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


def test_watch_exports_drift_and_online_auc_on_its_metrics(
    registered: Registered, watch: tuple[str, Path, Path]
) -> None:
    url, payload, feedback = watch
    model = (("model", NAME), ("version", "1"))
    features = registered.frame.drop(columns=[registered.target])
    _log_rows(payload, features.iloc[:400], per=1, prefix="ref")
    samples = _until(url, ("hybridml_drift_window_rows", model), 400.0)
    assert samples[("hybridml_drift_window_rows", model)] == 400.0
    assert samples[("hybridml_drift_detected", model)] == 0.0
    assert ("hybridml_prediction_psi", model) in samples
    labels = JsonLinesLog(feedback)
    for i in range(400):
        labels.write({"ts": time.time(), "request_id": f"ref{i}", "label": int(i % 2), "model": NAME})
    labels.close()
    variant = (("model", NAME), ("variant", "stable"), ("version", "1"))
    samples = _until(url, ("hybridml_online_labels", variant), 400.0)
    assert samples[("hybridml_online_labels", variant)] == 400.0
    assert ("hybridml_online_roc_auc", variant) in samples  # every score is 0.5: an AUC of 0.5
    assert samples[("hybridml_online_roc_auc", variant)] == pytest.approx(0.5)
    shifted = features.iloc[:400].copy()
    for name in SHIFTED:
        shifted[name] = shifted[name] + features[name].std()
    _log_rows(payload, shifted, per=1, prefix="shift")
    samples = _until(url, ("hybridml_drift_detected", model), 1.0)
    assert samples[("hybridml_drift_detected", model)] == 1.0
    drifted = {
        dict(labels)["feature"]
        for (name, labels), value in samples.items()
        if name == "hybridml_drift_feature_drifted" and value == 1.0
    }
    assert drifted == set(SHIFTED)
    pvalue = samples[("hybridml_drift_pvalue", (("feature", "mean_radius"), *model))]
    assert pvalue < 0.05
