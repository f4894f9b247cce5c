"""One harness per deploy target; the contract suite runs every test against each.

A target joins the suite by adding a ``pytest.param`` to ``TARGETS`` (with its tier's marker) and a branch in
``harness``: build the target, and say how a bundle becomes a :class:`ModelRef` it can fetch (the local target
reads ``file://``; a KServe target would upload to the cluster's S3 and hand out ``s3://`` URIs).
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from hybridml.core.data import builtin_breast_cancer, encode_features, encode_labels, infer_schema
from hybridml.core.model import fit, save_bundle
from hybridml.deploy import LocalConfig, make_target, model_ref
from tests.contract.harness import Bundles, Harness

TARGETS = [pytest.param("local", marks=pytest.mark.integration, id="local")]


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    root = tmp_path_factory.mktemp("contract-bundles")
    frame, target = builtin_breast_cancer()
    schema = infer_schema(frame, target)
    X, y = encode_features(frame, schema), encode_labels(frame, schema)
    for name, trees in (("v1", 20), ("v2", 3)):
        save_bundle(fit("xgboost", {"n_estimators": trees}, X, y), "xgboost", {}, schema, root / name)
    small = pd.DataFrame({"amount": [float(i % 13) for i in range(60)], "label": ["no", "yes"] * 30})
    small_schema = infer_schema(small, "label")
    model = fit("logistic_regression", {}, encode_features(small, small_schema), encode_labels(small, small_schema))
    save_bundle(model, "logistic_regression", {}, small_schema, root / "other")
    shutil.copytree(root / "v1", root / "broken")
    (root / "broken" / "model.json").write_text("{broken")
    rows = [{k: float(v) for k, v in frame[schema.names].iloc[i].items()} for i in (0, 1, 7)]
    return Bundles(root / "v1", root / "v2", root / "other", root / "broken", rows)


@pytest.fixture(params=TARGETS)
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "local":
        config = LocalConfig(tmp_path / "deployments", start_timeout_s=60)
        target = make_target(config)

        def crash(name: str) -> None:
            os.killpg(target.state(name)["pid"], signal.SIGKILL)

        yield Harness(
            target,
            ref=lambda name, version, bundle: model_ref(name, version, bundle.as_uri()),
            with_clock=lambda clock, sleep: make_target(config, clock=clock, sleep=sleep),
            break_serving=crash,
        )
    else:  # pragma: no cover - each target adds its branch
        raise AssertionError(f"no harness for {request.param}")
    for deployment in target.list():  # never leave a deployment behind, whatever failed
        target.delete(deployment.name)
