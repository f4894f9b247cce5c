"""`hybridml ab report` from log files and the refusals of `hybridml canary` / `ab` (in-process, no server)."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from hybridml.cli import app


def logs(tmp_path: Path, n: int = 200) -> tuple[Path, Path]:
    """Stable ranks every labelled pair right; the canary scores at random-ish (same order for both labels)."""
    payload, feedback = [], []
    for i in range(n):
        y = i % 2
        for variant, version, score in (("stable", "1", 0.2 + 0.6 * y), ("canary", "2", (i * 37 % 100) / 100)):
            rid = f"{variant}-{i}"
            payload.append({"record_version": 2, "ts": 1.0 + i, "request_id": rid, "model": "m", "version": version,
                            "variant": variant, "outputs": [score]})  # fmt: skip
            feedback.append({"ts": 2.0 + i, "request_id": rid, "label": y, "model": "m"})
    paths = tmp_path / "payload.jsonl", tmp_path / "feedback.jsonl"
    for path, records in zip(paths, (payload, feedback), strict=True):
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return paths


def invoke(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["--home", str(tmp_path / "home"), *args])
    return result.exit_code, result.stdout, result.stderr


def test_ab_report_from_logs(tmp_path: Path) -> None:
    payload, feedback = logs(tmp_path)
    code, out, err = invoke(tmp_path, "ab", "report", "--payload-log", str(payload), "--feedback-log",
                            str(feedback), "--json")  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert (report["a"]["version"], report["a"]["variant"], report["b"]["version"]) == ("1", "stable", "2")
    assert report["a"]["value"] == 1.0 and report["a"]["n"] == 200
    assert report["verdict"] == "A better"
    code, out, _ = invoke(tmp_path, "ab", "report", "--payload-log", str(payload), "--feedback-log", str(feedback),
                          "--metric", "positive_rate", "--json")  # fmt: skip
    rate = json.loads(out)
    assert code == 0 and (rate["a"]["value"], rate["b"]["value"], rate["verdict"]) == (0.5, 0.5, "no difference yet")
    assert rate["needed_per_variant"] is None  # no difference: no finite sample detects it


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ab", "report"], "give --endpoint, or --payload-log with --feedback-log"),
        (["ab", "report", "--payload-log", "nope.jsonl", "--feedback-log", "nope.jsonl"], "log not found: nope.jsonl"),
        (
            ["ab", "report", "--endpoint", "m", "--payload-log", "x"],
            "give --endpoint or --payload-log with --feedback-log, not both",
        ),
    ],
)
def test_ab_report_refusals(tmp_path: Path, args: list[str], message: str) -> None:
    code, _, err = invoke(tmp_path, *args)
    assert code == 2
    assert err.strip() == f"error: {message}"


def test_ab_report_bad_variant_and_metric(tmp_path: Path) -> None:
    payload, feedback = logs(tmp_path, n=20)
    base = ["ab", "report", "--payload-log", str(payload), "--feedback-log", str(feedback)]
    code, _, err = invoke(tmp_path, *base, "--b", "7:canary")
    assert code == 2 and "variant B (7:canary) has no logged predictions; found: 1:stable, 2:canary" in err
    code, _, err = invoke(tmp_path, *base, "--metric", "revenue")
    assert code == 2 and "unknown metric 'revenue'" in err


def test_canary_analyze_refuses_an_unknown_endpoint_and_bad_drift_input(tmp_path: Path) -> None:
    code, _, err = invoke(tmp_path, "canary", "analyze", "--endpoint", "nothing-here")
    assert code == 3, err
    drift = tmp_path / "drift.json"
    drift.write_text(json.dumps({"features": {}}))
    code, _, err = invoke(tmp_path, "canary", "analyze", "--endpoint", "m", "--drift-json", str(drift))
    assert code == 2 and "expected an object with a boolean 'drift'" in err


def test_drift_input_from_the_drift_monitor_json(tmp_path: Path) -> None:
    from hybridml.cli_canary import _drift
    from hybridml.errors import InvalidInputError

    report = tmp_path / "drift.json"
    report.write_text(json.dumps({"drift": True, "features": {}, "prediction": {"p_value": 0.001, "psi": 0.3}}))
    assert _drift(None, report) == (True, 0.001)
    report.write_text(json.dumps({"drift": False, "prediction": None}))
    assert _drift(None, report) == (False, None)
    assert _drift(True, None) == (True, None)
    assert _drift(None, None) == (None, None)
    with pytest.raises(InvalidInputError, match="not both"):
        _drift(False, report)
    report.write_text("{")
    with pytest.raises(InvalidInputError, match="not JSON"):
        _drift(None, report)
