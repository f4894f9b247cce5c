"""Property-based tests of the V2 codec: every datatype in JSON and binary form, the answer encoding, refusals.

Requests are built as a client would (JSON, or a JSON header + raw little-endian tensor bytes announced by
``inference-header-content-length``) and decoded with the codec's public functions; values must arrive exactly
(as the float32 the model computes in), and anything malformed must be refused with InvalidInputError only.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridml.errors import InvalidInputError
from hybridml.serving.predictor import BundlePredictor
from hybridml.serving.protocol import (
    ALL_DATATYPES,
    INFERENCE_HEADER,
    NUMERIC_DATATYPES,
    OUTPUT_NAME,
    V2Request,
    v2_decode,
    v2_matrix,
    v2_request,
    v2_response,
)

pytestmark = pytest.mark.unit

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FLOAT32_MAX = float(np.finfo(np.float32).max)
NUMPY = {
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8", "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "BOOL": "?",
}  # fmt: skip
INTEGERS = sorted(d for d in NUMERIC_DATATYPES if "INT" in d)
FLOATS = ["FP16", "FP32", "FP64"]


def values_of(datatype: str) -> st.SearchStrategy[Any]:
    """Finite values a client can send in ``datatype`` (and the model accepts: within float32's range)."""
    if datatype in FLOATS:
        width: Literal[16, 32, 64] = 16 if datatype == "FP16" else 32 if datatype == "FP32" else 64
        bound = FLOAT32_MAX if width == 64 else None
        return st.floats(width=width, allow_nan=False, allow_infinity=False, min_value=bound and -bound,
                         max_value=bound)  # fmt: skip
    info = np.iinfo(np.dtype(NUMPY[datatype]))
    return st.integers(int(info.min), int(info.max))


def binary_body(head: dict[str, Any], chunks: list[bytes]) -> tuple[bytes, dict[str, str]]:
    text = orjson.dumps(head)
    return text + b"".join(chunks), {INFERENCE_HEADER: str(len(text))}


def as_float32(values: list[Any]) -> np.ndarray:
    """What the model sees for plain numbers: float64 first (as ``float(value)``), then float32."""
    return np.array([float(v) for v in values], dtype=np.float64).astype(np.float32)


def same(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN (a missing value sent in binary data)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def same_records(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> bool:
    return len(got) == len(expected) and all(
        g.keys() == e.keys() and all(same(g[k], e[k]) for k in g) for g, e in zip(got, expected, strict=True)
    )


@pytest.fixture(scope="module")
def xgb(xgb_bundle: Path) -> BundlePredictor:
    return BundlePredictor.load(xgb_bundle)


@pytest.fixture(scope="module")
def hgb(hgb_bundle: Path) -> BundlePredictor:
    return BundlePredictor.load(hgb_bundle)


# ------------------------------------------------------------------------------------ one [n, n_features] tensor


@st.composite
def matrices(draw: st.DrawFn, width: int) -> tuple[str, int, list[Any]]:
    datatype = draw(st.sampled_from(sorted(NUMERIC_DATATYPES)))
    n = draw(st.integers(1, 3))
    values = draw(st.lists(values_of(datatype), min_size=n * width, max_size=n * width))
    return datatype, n, values


@SETTINGS
@given(data=st.data(), nested=st.booleans())
def test_single_tensor_json_round_trip(xgb: BundlePredictor, data: st.DataObject, nested: bool) -> None:
    datatype, n, values = data.draw(matrices(xgb.n_features))
    width = xgb.n_features
    sent = [values[i * width : (i + 1) * width] for i in range(n)] if nested else values
    body = orjson.dumps({"inputs": [{"name": "input-0", "shape": [n, width], "datatype": datatype, "data": sent}]})
    request = v2_request(body, {})
    assert [(t.name, t.shape, t.datatype) for t in request.inputs] == [("input-0", [n, width], datatype)]
    matrix, as_sent = v2_decode(xgb, request)
    assert matrix.dtype == np.float32 and matrix.shape == (n, width)
    np.testing.assert_array_equal(matrix, as_float32(values).reshape(n, width))
    rows = [dict(zip(xgb.names, values[i * width : (i + 1) * width], strict=True)) for i in range(n)]
    assert same_records(as_sent.records(), rows)
    assert all(same(as_sent.value(r, j), values[r * width + j]) for r in range(n) for j in range(width))
    np.testing.assert_array_equal(v2_matrix(xgb, v2_request(body, {})), matrix)


@SETTINGS
@given(data=st.data())
def test_single_tensor_binary_round_trip(xgb: BundlePredictor, data: st.DataObject) -> None:
    datatype, n, values = data.draw(matrices(xgb.n_features))
    width = xgb.n_features
    raw = np.array(values, dtype=NUMPY[datatype]).tobytes()
    assert len(raw) == n * width * np.dtype(NUMPY[datatype]).itemsize
    head = {"inputs": [{"name": "x", "shape": [n, width], "datatype": datatype,
                        "parameters": {"binary_data_size": len(raw)}}]}  # fmt: skip
    body, headers = binary_body(head, [raw])
    request = v2_request(body, headers)
    decoded = request.inputs[0].data
    assert isinstance(decoded, np.ndarray) and decoded.dtype == np.dtype(NUMPY[datatype])
    assert decoded.tolist() == values
    matrix, as_sent = v2_decode(xgb, request)
    np.testing.assert_array_equal(matrix, as_float32(values).reshape(n, width))
    rows = [dict(zip(xgb.names, values[i * width : (i + 1) * width], strict=True)) for i in range(n)]
    assert same_records(as_sent.records(), rows)
    assert all(same(as_sent.value(r, j), values[r * width + j]) for r in range(n) for j in range(width))


# ---------------------------------------------------------------------------------- one [n] tensor per feature


@st.composite
def mixed_rows(draw: st.DrawFn) -> dict[str, Any]:
    """Per-feature tensors for the mixed bundle (amount float, count int, flag bool, color category)."""
    n = draw(st.integers(1, 6))
    amount_type = draw(st.sampled_from(FLOATS))
    count_type = draw(st.sampled_from(INTEGERS))
    amount = draw(st.lists(st.none() | values_of(amount_type), min_size=n, max_size=n))
    count = draw(st.lists(values_of(count_type), min_size=n, max_size=n))
    flag = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    text = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
    color = draw(st.lists(st.sampled_from(["red", "green", "blue"]) | text, min_size=n, max_size=n))
    column = draw(st.booleans())  # [n, 1] instead of [n]
    return {"n": n, "types": {"amount": amount_type, "count": count_type, "flag": "BOOL", "color": "BYTES"},
            "columns": {"amount": amount, "count": count, "flag": flag, "color": color}, "column": column}  # fmt: skip


def expected_matrix(predictor: BundlePredictor, columns: dict[str, list[Any]]) -> np.ndarray:
    """The documented conversion: numbers as float32, None/NaN missing, bool 0/1, category index or NaN."""
    categories = {f.name: f.categories for f in predictor.schema.features if f.dtype == "category"}
    out = []
    for name in predictor.names:
        if name in categories:
            known = categories[name]
            out.append([float(known.index(v)) if v in known else math.nan for v in columns[name]])
        else:
            out.append([math.nan if v is None else float(v) for v in columns[name]])
    return np.array(out, dtype=np.float64).T.astype(np.float32)


@SETTINGS
@given(case=mixed_rows(), order=st.permutations(["amount", "count", "flag", "color"]))
def test_per_feature_json_round_trip(hgb: BundlePredictor, case: dict[str, Any], order: list[str]) -> None:
    n, columns = case["n"], case["columns"]
    shape = [n, 1] if case["column"] else [n]
    inputs = [
        {"name": name, "shape": shape, "datatype": case["types"][name],
         "data": [[v] for v in columns[name]] if case["column"] else columns[name]}
        for name in order
    ]  # fmt: skip
    matrix, as_sent = v2_decode(hgb, v2_request(orjson.dumps({"inputs": inputs}), {}))
    np.testing.assert_array_equal(matrix, expected_matrix(hgb, columns))
    rows = [{name: columns[name][r] for name in hgb.names} for r in range(n)]
    assert same_records(as_sent.records(), rows)


@SETTINGS
@given(case=mixed_rows())
def test_per_feature_binary_round_trip(hgb: BundlePredictor, case: dict[str, Any]) -> None:
    n, columns, types = case["n"], case["columns"], case["types"]
    binary = dict(columns, amount=[math.nan if v is None else v for v in columns["amount"]])
    chunks, inputs = [], []
    for name in hgb.names:
        if types[name] == "BYTES":
            raw = b"".join(struct.pack("<I", len(s.encode())) + s.encode() for s in binary[name])
        else:
            raw = np.array(binary[name], dtype=NUMPY[types[name]]).tobytes()
        chunks.append(raw)
        inputs.append({"name": name, "shape": [n, 1] if case["column"] else [n], "datatype": types[name],
                       "parameters": {"binary_data_size": len(raw)}})  # fmt: skip
    body, headers = binary_body({"inputs": inputs}, chunks)
    request = v2_request(body, headers)
    for tensor, name in zip(request.inputs, hgb.names, strict=True):
        decoded = tensor.data.tolist() if isinstance(tensor.data, np.ndarray) else tensor.data
        assert len(decoded) == n and all(same(a, b) for a, b in zip(decoded, binary[name], strict=True))
    matrix, as_sent = v2_decode(hgb, request)
    np.testing.assert_array_equal(matrix, expected_matrix(hgb, columns))
    rows = [{name: binary[name][r] for name in hgb.names} for r in range(n)]
    assert same_records(as_sent.records(), rows)


# ---------------------------------------------------------------------------------------------------- answers


@SETTINGS
@given(
    scores=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=40),
    how=st.sampled_from(["json", "outputs", "parameters", "outputs-false", "outputs-wins"]),
    request_id=st.none() | st.text(min_size=1, max_size=10),
    version=st.sampled_from(["", "3"]),
)
def test_answer_decodes_back_to_the_scores(scores: list[float], how: str, request_id: str | None, version: str) -> None:
    out = {"name": OUTPUT_NAME}
    outputs, parameters = [], {}
    if how == "outputs":
        outputs = [{**out, "parameters": {"binary_data": True}}]
    elif how == "parameters":
        parameters = {"binary_data_output": True}
    elif how == "outputs-false":
        outputs = [{**out, "parameters": {"binary_data": False}}]
    elif how == "outputs-wins":  # a per-output choice overrides the request-wide one
        outputs, parameters = [{**out, "parameters": {"binary_data": False}}], {"binary_data_output": True}
    request = V2Request(request_id, [], outputs, parameters)
    binary = how in ("outputs", "parameters")
    assert request.binary_output is binary
    body, headers = v2_response("m", version, request, "server-id", np.array(scores))
    expected_head: dict[str, Any] = {"model_name": "m", "id": request_id or "server-id",
                     "outputs": [{"name": OUTPUT_NAME, "shape": [len(scores)], "datatype": "FP64"}]}  # fmt: skip
    if version:
        expected_head["model_version"] = version
    if binary:
        length = int(headers[INFERENCE_HEADER])
        assert set(headers) == {INFERENCE_HEADER}
        head = orjson.loads(body[:length])
        expected_head["outputs"][0]["parameters"] = {"binary_data_size": 8 * len(scores)}
        assert head == expected_head
        assert len(body) - length == 8 * len(scores)
        assert np.frombuffer(body[length:], dtype="<f8").tolist() == scores
    else:
        assert headers == {}
        expected_head["outputs"][0]["data"] = scores
        assert orjson.loads(body) == expected_head


# --------------------------------------------------------------------------------------------------- refusals


def refused(predictor: BundlePredictor, body: bytes, headers: dict[str, str]) -> InvalidInputError:
    with pytest.raises(InvalidInputError) as caught:
        v2_decode(predictor, v2_request(body, headers))
    return caught.value


@SETTINGS
@given(
    datatype=st.sampled_from(sorted(d for d in NUMERIC_DATATYPES if np.dtype(NUMPY[d]).itemsize > 1)),
    n=st.integers(1, 3),
    cut=st.integers(1, 7),
)
def test_binary_bytes_that_are_not_whole_values_are_refused(
    xgb: BundlePredictor, datatype: str, n: int, cut: int
) -> None:
    itemsize = np.dtype(NUMPY[datatype]).itemsize
    raw = bytes(n * xgb.n_features * itemsize - (cut % itemsize or 1))
    head: dict[str, Any] = {"inputs": [{"name": "x", "shape": [n, xgb.n_features], "datatype": datatype,
                        "parameters": {"binary_data_size": len(raw)}}]}  # fmt: skip
    refused(xgb, *binary_body(head, [raw]))
    # Whole values, but the size claims more than was sent, or less (bytes left that no input claims).
    whole = bytes(n * xgb.n_features * itemsize)
    for claimed, sent in ((len(whole) + 1, whole), (len(whole), whole + b"\0"), (len(whole) - itemsize, whole)):
        head["inputs"][0]["parameters"]["binary_data_size"] = claimed
        refused(xgb, *binary_body(head, [sent]))


@SETTINGS
@given(data=st.data(), extra=st.integers(-5, 5).filter(bool), binary=st.booleans())
def test_shape_and_data_that_disagree_are_refused(
    xgb: BundlePredictor, data: st.DataObject, extra: int, binary: bool
) -> None:
    datatype, n, values = data.draw(matrices(xgb.n_features))
    values = values + values[:extra] if extra > 0 else values[:extra]
    shape = [n, xgb.n_features]
    if binary:
        raw = np.array(values, dtype=NUMPY[datatype]).tobytes()
        head = {"inputs": [{"name": "x", "shape": shape, "datatype": datatype,
                            "parameters": {"binary_data_size": len(raw)}}]}  # fmt: skip
        error = refused(xgb, *binary_body(head, [raw]))
    else:
        body = {"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": values}]}
        error = refused(xgb, orjson.dumps(body), {})
    assert f"has {len(values)} values" in str(error)


@SETTINGS
@given(case=mixed_rows(), extra=st.integers(1, 3))
def test_per_feature_length_that_disagrees_with_shape_is_refused(
    hgb: BundlePredictor, case: dict[str, Any], extra: int
) -> None:
    n, columns, types = case["n"], case["columns"], case["types"]
    inputs = [{"name": name, "shape": [n + extra], "datatype": types[name], "data": columns[name]}
              for name in hgb.names]  # fmt: skip
    refused(hgb, orjson.dumps({"inputs": inputs}), {})


@SETTINGS
@given(
    datatype=st.text(min_size=1, max_size=8).filter(lambda d: d not in ALL_DATATYPES),
    binary=st.booleans(),
)
def test_unknown_datatype_is_refused(xgb: BundlePredictor, datatype: str, binary: bool) -> None:
    shape = [1, xgb.n_features]
    if binary:
        raw = bytes(4 * xgb.n_features)
        head = {"inputs": [{"name": "x", "shape": shape, "datatype": datatype,
                            "parameters": {"binary_data_size": len(raw)}}]}  # fmt: skip
        error = refused(xgb, *binary_body(head, [raw]))
    else:
        body = {"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": [0.5] * xgb.n_features}]}
        error = refused(xgb, orjson.dumps(body), {})
    assert "unknown datatype" in str(error) and repr(datatype) in str(error)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def damaged_tensors(draw: st.DrawFn, names: tuple[str, ...]) -> dict[str, Any]:
    """A tensor with some of its fields replaced by arbitrary JSON."""
    tensor: dict[str, Any] = {
        "name": draw(st.sampled_from([*names, "input-0"])),
        "shape": draw(st.lists(st.integers(-1, 3), max_size=3)),
        "datatype": draw(st.sampled_from([*sorted(ALL_DATATYPES), "FP8"])),
        "data": draw(st.lists(JSON, max_size=6) | st.lists(st.floats(), max_size=6)),
    }
    for key in draw(st.lists(st.sampled_from(["name", "shape", "datatype", "data", "parameters"]), max_size=2)):
        tensor[key] = draw(JSON)
    return tensor


@settings(max_examples=60, deadline=None)
@given(data=st.data(), which=st.sampled_from(["xgb", "hgb"]))
def test_any_malformed_body_is_refused_with_invalid_input_only(
    xgb: BundlePredictor, hgb: BundlePredictor, data: st.DataObject, which: str
) -> None:
    predictor = xgb if which == "xgb" else hgb
    inputs = data.draw(st.lists(damaged_tensors(predictor.names), max_size=4) | JSON)
    body = orjson.dumps({"inputs": inputs, "outputs": data.draw(st.sampled_from([[], [{"name": "other"}]]))})
    try:
        matrix = v2_matrix(predictor, v2_request(body, {}))
    except InvalidInputError:
        return
    assert matrix.dtype == np.float32 and matrix.shape[1] == predictor.n_features


@SETTINGS
@given(text=st.text("abcdef", min_size=1, max_size=6), short=st.integers(1, 5))
def test_bytes_element_longer_than_the_data_is_refused(hgb: BundlePredictor, text: str, short: int) -> None:
    value = text.encode()
    raw = struct.pack("<I", len(value) + short) + value  # announces more bytes than follow
    head = {"name": "color", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}
    body, headers = binary_body({"inputs": [head]}, [raw])
    with pytest.raises(InvalidInputError):
        v2_request(body, headers)
