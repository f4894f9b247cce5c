"""Safe loading, protocol parsing, feedback validation, metrics and sticky buckets, without server processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import boto3
import numpy as np
import orjson
import pytest
from moto import mock_aws
from prometheus_client import CollectorRegistry, generate_latest

from hybridml.errors import InvalidInputError, NotFoundError, PayloadTooLargeError
from hybridml.serving import protocol
from hybridml.serving.app import Batcher, InferenceApp
from hybridml.serving.payload_log import feedback_records
from hybridml.serving.predictor import BundlePredictor
from hybridml.serving.router import bucket
from hybridml.serving.storage import check_no_pickle, inside, resolve_model, safe_relative


@pytest.fixture(scope="module")
def xgb(xgb_bundle: Path) -> BundlePredictor:
    return BundlePredictor.load(xgb_bundle, max_rows=50)


@pytest.mark.parametrize(
    "path", ["../x", "a/../../x", "%2e%2e/x", "%252e%252e/x", "/etc/passwd", "a\\..\\b", "C:/x", "a\x00"]
)
def test_escaping_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidInputError):
        safe_relative(path)


def test_inside_root_and_symlink_escape(tmp_path: Path) -> None:
    (tmp_path / "root" / "m").mkdir(parents=True)
    assert inside(tmp_path / "root", "m") == (tmp_path / "root" / "m").resolve()
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    with pytest.raises(InvalidInputError, match="outside"):
        inside(tmp_path / "root", "link")


def test_resolve_model_schemes_root_and_pickle(tmp_path: Path, xgb_bundle: Path) -> None:
    assert resolve_model(f"file://{xgb_bundle}") == xgb_bundle.resolve()
    assert resolve_model(xgb_bundle.name, model_root=xgb_bundle.parent) == xgb_bundle.resolve()
    for uri in ("http://example.com/m", "gs://b/m", "ftp://x/y"):
        with pytest.raises(InvalidInputError, match="not allowed"):
            resolve_model(uri)
    with pytest.raises(InvalidInputError):
        resolve_model("../x", model_root=xgb_bundle.parent)
    with pytest.raises(InvalidInputError, match="outside the model root"):
        resolve_model(str(tmp_path), model_root=xgb_bundle.parent)
    with pytest.raises(NotFoundError):
        resolve_model(str(tmp_path / "missing"))
    (tmp_path / "model.pkl").write_bytes(b"\x80\x04junk")
    with pytest.raises(InvalidInputError, match="pickle"):
        check_no_pickle(tmp_path)
    check_no_pickle(tmp_path, allow_pickle=True)
    (tmp_path / "model.pkl").unlink()
    (tmp_path / "model.bin").write_bytes(b"\x80\x05data")
    with pytest.raises(InvalidInputError, match="pickle-format"):
        check_no_pickle(tmp_path)


def test_s3_fetch_and_key_traversal(tmp_path: Path, xgb_bundle: Path) -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="models")
        for f in xgb_bundle.iterdir():
            s3.upload_file(str(f), "models", f"cancer/1/{f.name}")
        local = resolve_model("s3://models/cancer/1", cache_dir=tmp_path, s3_client=s3)
        assert BundlePredictor.load(local).n_features == 30
        s3.put_object(Bucket="models", Key="evil/../../escape.json", Body=b"{}")
        with pytest.raises(InvalidInputError, match="escapes"):
            resolve_model("s3://models/evil", cache_dir=tmp_path, s3_client=s3)
        with pytest.raises(NotFoundError):
            resolve_model("s3://models/none", cache_dir=tmp_path, s3_client=s3)


def test_v2_binary_and_nesting(xgb: BundlePredictor) -> None:
    rows = np.ones((2, 30), dtype=np.float32)
    head = orjson.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [2, 30], "datatype": "FP32", "parameters": {"binary_data_size": rows.nbytes}}
            ]
        }
    )
    request = protocol.v2_request(head + rows.tobytes(), {protocol.INFERENCE_HEADER: str(len(head))})
    np.testing.assert_array_equal(protocol.v2_matrix(xgb, request), rows)
    with pytest.raises(InvalidInputError, match="not claimed"):
        protocol.v2_request(head + rows.tobytes() + b"x", {protocol.INFERENCE_HEADER: str(len(head))})
    nested = [[1.0] * 30, [1.0] * 29 + [[1.0]]]
    body = orjson.dumps({"inputs": [{"name": "x", "shape": [2, 30], "datatype": "FP32", "data": nested}]})
    with pytest.raises(InvalidInputError, match="nested"):
        protocol.v2_matrix(xgb, protocol.v2_request(body, {}))
    ragged = orjson.dumps(
        {"inputs": [{"name": "x", "shape": [2, 30], "datatype": "FP32", "data": [[1.0] * 20, [1.0] * 40]}]}
    )
    with pytest.raises(InvalidInputError, match="nested"):
        protocol.v2_matrix(xgb, protocol.v2_request(ragged, {}))
    with pytest.raises(PayloadTooLargeError):
        protocol.v1_matrix(xgb, orjson.dumps({"instances": [[1.0] * 30] * 51}))
    with pytest.raises(InvalidInputError, match="finite"):
        protocol.v1_matrix(xgb, orjson.dumps({"instances": [[1e39] * 30]}))
    with pytest.raises(InvalidInputError, match="boolean"):
        protocol.v1_matrix(xgb, orjson.dumps({"instances": [[True] * 30]}))


def test_feedback_validation() -> None:
    assert [
        r["label"]
        for r in feedback_records(
            {"items": [{"request_id": "a", "label": "yes"}, {"request_id": "b", "label": False}]}, ("no", "yes")
        )
    ] == [1, 0]
    for bad in (
        {"request_id": "a"},
        {"request_id": "", "label": 1},
        {"request_id": "a", "label": 2},
        {"items": []},
        [1],
        {"request_id": "a", "label": 1, "x": 0},
    ):
        with pytest.raises(InvalidInputError):
            feedback_records(bad, ("no", "yes"))


@pytest.mark.parametrize(
    ("classes", "label", "encoded"),
    [
        (("0", "1"), 1, 1),
        (("0", "1"), "0", 0),
        # --positive-class 0: the label names the class "1", which is now the negative one.
        (("1", "0"), 1, 0),
        (("1", "0"), "0", 1),
        (("False", "True"), True, 1),
        (("True", "False"), True, 0),
        # Classes with other names: 0/1 and false/true mean negative/positive.
        (("benign", "malignant"), 1, 1),
        (("benign", "malignant"), False, 0),
        (("benign", "malignant"), "malignant", 1),
    ],
)
def test_feedback_label_is_a_value_of_the_target(classes: tuple[str, str], label: object, encoded: int) -> None:
    assert feedback_records({"request_id": "r", "label": label}, classes)[0]["label"] == encoded


def test_app_metrics_in_fresh_registry_and_batching(xgb: BundlePredictor) -> None:
    registry = CollectorRegistry()
    batcher = Batcher(xgb)
    app = InferenceApp("cancer", "7", xgb, registry=registry, batcher=batcher)
    body = orjson.dumps({"instances": [[1.0] * 30]})

    async def many() -> list[int]:
        answers = await asyncio.gather(*(app.handle("POST", "/v1/models/cancer:predict", {}, body) for _ in range(20)))
        return [a.status for a in answers]

    assert asyncio.run(many()) == [200] * 20
    assert batcher.batches < 20  # concurrent requests were scored together
    text = generate_latest(registry).decode()
    assert 'hybridml_requests_total{code="200",model="cancer",variant="stable",version="7"} 20.0' in text
    assert 'hybridml_prediction_score_count{model="cancer",variant="stable",version="7"} 20.0' in text
    assert "hybridml_input_bin_total" in text


def test_sticky_bucket_is_stable_and_spread() -> None:
    assert bucket("user-1") == bucket("user-1")
    share = sum(bucket(f"user-{i}") < 1000 for i in range(20_000)) / 20_000
    assert 0.08 < share < 0.12


def test_generated_request_ids_are_uuid4_hex() -> None:
    import uuid

    from hybridml.serving.app import new_request_id

    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    for value in ids:
        parsed = uuid.UUID(value)
        assert (parsed.hex, parsed.version, parsed.variant) == (value, 4, uuid.RFC_4122)


def test_score_and_input_metrics_queue_is_counted_at_scrape_and_in_bulk(xgb: BundlePredictor) -> None:
    from hybridml.serving.metrics import FOLD_ROWS, ServingMetrics

    registry = CollectorRegistry()
    metrics = ServingMetrics(registry, "cancer", "7", "stable", xgb.schema)
    matrix = np.ones((3, 30), dtype=np.float32)
    matrix[0, 0] = np.nan
    scores = np.array([0.05, 0.55, 0.95])
    metrics.scored(matrix, scores)
    text = generate_latest(registry).decode()  # fewer than FOLD_ROWS rows queued: the scrape counts them
    assert 'hybridml_prediction_score_count{model="cancer",variant="stable",version="7"} 3.0' in text
    assert 'hybridml_prediction_score_bucket{le="0.1",model="cancer",variant="stable",version="7"} 1.0' in text
    assert 'hybridml_prediction_score_bucket{le="0.6",model="cancer",variant="stable",version="7"} 2.0' in text
    assert 'hybridml_rows_total{model="cancer",variant="stable",version="7"} 3.0' in text
    missing = [line for line in text.splitlines() if line.startswith("hybridml_input_bin_total") and "missing" in line]
    assert sum(float(line.split()[-1]) for line in missing) == 1.0
    big = np.full((FOLD_ROWS, 30), 1.0, dtype=np.float32)
    metrics.scored(big, np.full(FOLD_ROWS, 0.5))  # reaches FOLD_ROWS: counted at once, the queue is empty
    assert metrics._summary._queue == []
    text = generate_latest(registry).decode()
    count = 3 + FOLD_ROWS
    assert f'hybridml_prediction_score_count{{model="cancer",variant="stable",version="7"}} {count}.0' in text


def test_input_bins_follow_the_reference_profile(mixed_frame: pd.DataFrame) -> None:
    """/metrics bins inputs exactly as core.profile bins the reference, so a monitor compares like with like."""
    from prometheus_client.parser import text_string_to_metric_families

    from hybridml.core.data import encode_features, infer_schema
    from hybridml.core.profile import bin_shares, build_profile, category_shares
    from hybridml.serving.metrics import ServingMetrics

    schema = infer_schema(mixed_frame, "label")
    profile = build_profile(mixed_frame, schema, np.linspace(0, 1, len(mixed_frame)))
    registry = CollectorRegistry()
    metrics = ServingMetrics(registry, "m", "1", "stable", schema, profile)
    live = mixed_frame.sample(frac=1.0, random_state=1).head(150)
    metrics.scored(encode_features(live, schema), np.full(len(live), 0.5))
    counts: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name == "hybridml_input_bin_total":
                counts.setdefault(sample.labels["feature"], {})[sample.labels["bin"]] = sample.value
    assert set(counts) == {"amount", "count", "flag", "color"}
    for name, numeric in profile.numeric.items():
        values = live[name].astype(float)
        expected = [share * values.notna().sum() for share in bin_shares(values, numeric.edges)]
        got = [counts[name][str(b)] for b in range(len(numeric.shares))]
        np.testing.assert_allclose(got, expected, err_msg=name)
        assert counts[name]["missing"] == values.isna().sum()
        assert set(counts[name]) == {*map(str, range(len(numeric.shares))), "missing"}
    categories = schema.features[schema.names.index("color")].categories
    shares = category_shares(live["color"], categories)
    assert [counts["color"][str(i)] for i in range(len(categories))] == [shares[c] * len(live) for c in categories]


@pytest.mark.parametrize("spec", ["m/1:10\n", "m/1:10 ", "m/1:0", "m/1:100", "m:10"])
def test_canary_specs_are_matched_whole(spec: str) -> None:
    from hybridml.serving.cli_support import parse_canary

    with pytest.raises(InvalidInputError, match="--canary must look like NAME/VERSION:PCT"):
        parse_canary(spec)
