"""The drift report: a self-contained page with a plot per feature, and the figures logged as MLflow metrics."""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd

from hybridml.core.data import infer_schema
from hybridml.core.drift import DriftResult, compute_drift
from hybridml.core.profile import build_profile
from hybridml.monitoring.drift_report import ReportContext, metrics_of, render_html

PNG = b"\x89PNG\r\n\x1a\n"


def _result() -> DriftResult:
    rng = np.random.default_rng(0)

    def frame(n: int) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "a<b": rng.normal(size=n),  # a name that needs escaping in HTML and replacing in a metric key
                "colour": rng.choice(["red", "green"], size=n),
                "y": rng.choice(["no", "yes"], size=n),
            }
        )

    reference = frame(1000)
    profile = build_profile(reference, infer_schema(reference, "y"), rng.uniform(size=1000))
    current = frame(1000)
    current["a<b"] = current["a<b"] + 1.0
    return compute_drift(profile, current, scores=rng.uniform(size=1000))


def test_the_page_holds_the_verdict_a_row_and_a_png_per_feature() -> None:
    result = _result()
    page = render_html(result, ReportContext("churn", 3, "file today.csv"))
    assert page.startswith("<!DOCTYPE html>") and page.endswith("</html>")
    assert "<h1>Drift of churn version 3</h1>" in page
    assert "<b>Drift</b>: a&lt;b" in page
    assert "a<b" not in page  # escaped everywhere
    assert "Window: 1000 rows from file today.csv" in page
    assert page.count("<tr") == 1 + 2  # header + one row per feature
    assert page.count('<tr class="drifted">') == 1
    images = page.split('src="data:image/png;base64,')[1:]
    assert len(images) == 3  # two features + the scores
    assert all(base64.b64decode(image.split('"', 1)[0]).startswith(PNG) for image in images)
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from elsewhere


def test_metrics_name_every_feature_with_a_valid_key() -> None:
    result = _result()
    metrics = metrics_of(result)
    assert metrics["drift"] == 1.0
    assert metrics["drifted_features"] == 1.0
    assert metrics["window_rows"] == 1000.0
    assert metrics["psi.a_b"] == result.features["a<b"].psi
    assert metrics["adjusted_p.colour"] == result.features["colour"].adjusted_p
    assert result.prediction is not None and metrics["prediction_psi"] == result.prediction.psi
    assert len(metrics) == 3 + 2 * 2 + 1
