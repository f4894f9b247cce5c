"""V1/V2 codec behaviour the mutation run (issue 12) found unasserted: every refusal's message, V1 bodies,
binary offsets and boundaries, BYTES framing, the values as sent, and the model metadata."""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridml.errors import InvalidInputError, PayloadTooLargeError
from hybridml.serving.predictor import BundlePredictor
from hybridml.serving.protocol import (
    INFERENCE_HEADER,
    SentColumns,
    SentFlat,
    SentRows,
    V2Request,
    loads,
    model_metadata,
    v1_matrix,
    v1_response,
    v2_decode,
    v2_request,
)

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def xgb(xgb_bundle: Path) -> BundlePredictor:
    return BundlePredictor.load(xgb_bundle, max_rows=3)


@pytest.fixture(scope="module")
def hgb(hgb_bundle: Path) -> BundlePredictor:
    return BundlePredictor.load(hgb_bundle, max_rows=3)


def message(call: Any, *args: Any) -> str:
    with pytest.raises(InvalidInputError) as caught:
        call(*args)
    return str(caught.value)


def binary(head: dict[str, Any], raw: bytes) -> tuple[bytes, dict[str, str]]:
    text = orjson.dumps(head)
    return text + raw, {INFERENCE_HEADER: str(len(text))}


def frames(*texts: bytes) -> bytes:
    """BYTES elements as KServe's binary extension frames them: a little-endian uint32 length, then the bytes."""
    return b"".join(struct.pack("<I", len(t)) + t for t in texts)


# ---------------------------------------------------------------------------------------------------------- V1


def test_v1_instances_rows_and_objects(xgb: BundlePredictor) -> None:
    rows = [[float(i + j) for j in range(30)] for i in range(2)]
    matrix, sent = v1_matrix(xgb, orjson.dumps({"instances": rows}))
    np.testing.assert_array_equal(matrix, np.array(rows, dtype=np.float32))
    assert isinstance(sent, SentRows)
    assert sent.records() == [dict(zip(xgb.names, r, strict=True)) for r in rows]
    assert sent.value(1, 2) == rows[1][2]
    named = [dict(zip(xgb.names, r, strict=True)) for r in rows]
    matrix, sent = v1_matrix(xgb, orjson.dumps({"inputs": named}))
    np.testing.assert_array_equal(matrix, np.array(rows, dtype=np.float32))
    assert sent.records() == named and sent.value(0, 29) == rows[0][29]


def test_v1_inputs_as_columns(xgb: BundlePredictor) -> None:
    columns = {name: [float(j), float(j) + 0.5] for j, name in enumerate(xgb.names)}
    matrix, sent = v1_matrix(xgb, orjson.dumps({"inputs": columns}))
    np.testing.assert_array_equal(matrix, np.array([[j for j in range(30)], [j + 0.5 for j in range(30)]], "f4"))
    assert isinstance(sent, SentColumns)
    assert sent.value(1, 3) == 3.5
    assert sent.records() == [{n: columns[n][r] for n in xgb.names} for r in range(2)]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"[1]", "request body must be a JSON object with 'instances', got list"),
        (b"{}", "request body must have exactly one of 'instances' or 'inputs'"),
        (b'{"instances": [], "inputs": []}', "request body must have exactly one of 'instances' or 'inputs'"),
        (b'{"instances": {"a": 1}}', "'instances' must be a list of rows, got dict"),
        (b'{"inputs": 3}', "'inputs' must be a list of rows or an object of columns, got int"),
        (b'{"inputs": "a"}', "'inputs' must be a list of rows or an object of columns, got str"),
    ],
)
def test_v1_refusals_name_the_problem(xgb: BundlePredictor, body: bytes, expected: str) -> None:
    assert message(v1_matrix, xgb, body) == expected


def test_v1_bad_json_uses_kserves_wording() -> None:
    assert message(loads, b"{nope").startswith("Unrecognized request format: ")
    assert loads(b'{"a": [1, 2.5, null]}') == {"a": [1, 2.5, None]}


def test_v1_answer() -> None:
    assert orjson.loads(v1_response(np.array([0.25, 1.0]))) == {"predictions": [0.25, 1.0]}


# ---------------------------------------------------------------------------------------------- V2 request


def test_v2_request_keeps_id_outputs_and_parameters() -> None:
    body = orjson.dumps(
        {
            "id": "r-1",
            "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.5], "parameters": {"p": 1}}],
            "outputs": [{"name": "probability"}],
            "parameters": {"binary_data_output": True},
        }
    )
    request = v2_request(body, {})
    assert request.id == "r-1"
    assert request.outputs == [{"name": "probability"}]
    assert request.parameters == {"binary_data_output": True}
    (tensor,) = request.inputs
    assert (tensor.name, tensor.shape, tensor.datatype, tensor.data, tensor.parameters) == (
        "x", [1], "FP32", [1.5], {"p": 1}
    )  # fmt: skip
    bare = v2_request(b'{"inputs": [], "outputs": null, "parameters": null}', {})
    assert (bare.id, bare.inputs, bare.outputs, bare.parameters) == (None, [], [], {})


NAMED = "must be a list of objects with a name"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"[]", "invalid request body: body: must be a JSON object"),
        (b'{"inputs": {}}', "invalid request body: inputs: must be a list of tensors"),
        (b"{}", "invalid request body: inputs: must be a list of tensors"),
        (b'{"inputs": [], "id": 3}', "invalid request body: id: must be a string"),
        (b'{"inputs": [], "outputs": {"name": "p"}}', f"invalid request body: outputs: {NAMED}"),
        (b'{"inputs": [], "outputs": [{"name": 1}]}', f"invalid request body: outputs: {NAMED}"),
        (b'{"inputs": [], "outputs": ["p"]}', f"invalid request body: outputs: {NAMED}"),
        (b'{"inputs": [], "parameters": [1]}', "invalid request body: parameters: must be an object"),
    ],
)  # fmt: skip
def test_v2_body_refusals_name_the_field(body: bytes, expected: str) -> None:
    assert message(v2_request, body, {}) == expected


GOOD = {"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}


@pytest.mark.parametrize(
    ("tensor", "expected"),
    [
        ([1], "inputs.1: must be an object"),
        ({**GOOD, "name": 5}, "inputs.1.name: field required (a string)"),
        ({k: v for k, v in GOOD.items() if k != "name"}, "inputs.1.name: field required (a string)"),
        ({**GOOD, "shape": [1.0]}, "inputs.1.shape: field required (a list of integers)"),
        ({**GOOD, "shape": [True]}, "inputs.1.shape: field required (a list of integers)"),
        ({**GOOD, "shape": 1}, "inputs.1.shape: field required (a list of integers)"),
        ({**GOOD, "datatype": None}, "inputs.1.datatype: field required (a string)"),
        ({**GOOD, "parameters": [1]}, "inputs.1.parameters: must be an object"),
        ({k: v for k, v in GOOD.items() if k != "data"}, "inputs.1.data: field required"),
    ],
)
def test_v2_tensor_refusals_name_the_tensor_and_field(tensor: Any, expected: str) -> None:
    body = orjson.dumps({"inputs": [GOOD, tensor]})
    assert message(v2_request, body, {}) == f"invalid request body: {expected}"


def test_header_length_boundaries() -> None:
    body, headers = binary({"inputs": []}, b"")
    assert v2_request(body, headers).inputs == []  # the JSON is the whole body: length == len(body)
    assert message(v2_request, body, {INFERENCE_HEADER: str(len(body) + 1)}) == (
        f"{INFERENCE_HEADER} {len(body) + 1} is outside the body of {len(body)} bytes"
    )
    assert message(v2_request, body, {INFERENCE_HEADER: "-1"}) == (
        f"{INFERENCE_HEADER} -1 is outside the body of {len(body)} bytes"
    )
    # 0 is inside the body: the JSON part is empty, which is not JSON.
    assert message(v2_request, body, {INFERENCE_HEADER: "0"}).startswith("invalid request body: not JSON: ")
    assert message(v2_request, body, {INFERENCE_HEADER: "x" * 50}) == (
        f"{INFERENCE_HEADER} must be an integer, got {'x' * 40!r}"
    )


def test_binary_tensors_take_consecutive_slices_and_json_tensors_none() -> None:
    a = np.array([1.5, -2.0], dtype="<f4").tobytes()
    b = np.array([7, 8, 9], dtype="<i2").tobytes()
    head = {
        "inputs": [
            {"name": "a", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": len(a)}},
            {"name": "j", "shape": [1], "datatype": "FP64", "data": [0.5]},
            {"name": "b", "shape": [3], "datatype": "INT16", "parameters": {"binary_data_size": len(b)}},
            {"name": "e", "shape": [0], "datatype": "FP64", "parameters": {"binary_data_size": 0}},
        ]
    }
    request = v2_request(*binary(head, a + b))
    data = [t.data for t in request.inputs]
    assert data[0].tolist() == [1.5, -2.0] and data[0].dtype == np.dtype("<f4")
    assert data[1] == [0.5]
    assert data[2].tolist() == [7, 8, 9] and data[2].dtype == np.dtype("<i2")
    assert data[3].tolist() == []


@pytest.mark.parametrize("size", [True, 4.0, "4", -1, 5, None])
def test_a_binary_size_that_does_not_fit_is_refused(size: Any) -> None:
    raw = np.array([1.0], dtype="<f4").tobytes()
    head = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": size}}]}
    if size is None:  # a null size claims nothing: the bytes are left over
        assert message(v2_request, *binary(head, raw)) == "4 bytes of binary data are not claimed by any input"
        return
    assert message(v2_request, *binary(head, raw)) == (
        f"input 'x': binary_data_size {size!r} does not fit the binary data"
    )


def test_unclaimed_bytes_are_counted() -> None:
    raw = np.array([1.0], dtype="<f4").tobytes()
    head = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]}
    assert message(v2_request, *binary(head, raw + b"abc")) == "3 bytes of binary data are not claimed by any input"
    head["inputs"][0] = {"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}
    assert message(v2_request, *binary(head, b"ab")) == "2 bytes of binary data are not claimed by any input"


def test_binary_refusals_name_the_tensor() -> None:
    head = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP8", "parameters": {"binary_data_size": 1}}]}
    assert message(v2_request, *binary(head, b"\0")) == "input 'x' has unknown datatype 'FP8'"
    head = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 3}}]}
    assert message(v2_request, *binary(head, b"\0\0\0")) == "input 'x': 3 bytes are not whole FP32 values"


# ------------------------------------------------------------------------------------------------ BYTES framing


def bytes_tensor(raw: bytes) -> list[str]:
    head = {"inputs": [{"name": "c", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}]}
    data: list[str] = v2_request(*binary(head, raw)).inputs[0].data
    return data


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(max_size=6), max_size=5))
def test_bytes_elements_round_trip(texts: list[str]) -> None:
    assert bytes_tensor(frames(*(t.encode() for t in texts))) == texts


def test_bytes_framing_boundaries() -> None:
    assert bytes_tensor(b"") == []
    assert bytes_tensor(frames(b"")) == [""]  # a length prefix exactly at the end: one empty element
    assert bytes_tensor(frames(b"ab", b"\xff")) == ["ab", "\ufffd"]  # not UTF-8: replaced, never refused
    for cut in (1, 2, 3):
        assert message(bytes_tensor, frames(b"ab") + b"\0" * cut) == "input 'c': truncated BYTES element"
    assert message(bytes_tensor, struct.pack("<I", 9) + b"abc") == (
        "input 'c': BYTES element of 9 bytes runs past the tensor's binary data"
    )
    assert bytes_tensor(struct.pack("<I", 3) + b"abc") == ["abc"]  # exactly up to the end


# ----------------------------------------------------------------------------------------------- V2 decode


def decode(predictor: BundlePredictor, inputs: list[dict[str, Any]], **extra: Any) -> tuple[np.ndarray, Any]:
    return v2_decode(predictor, v2_request(orjson.dumps({"inputs": inputs, **extra}), {}))


def decode_message(predictor: BundlePredictor, inputs: list[dict[str, Any]], **extra: Any) -> str:
    with pytest.raises(InvalidInputError) as caught:
        decode(predictor, inputs, **extra)
    return str(caught.value)


def columns_of(hgb: BundlePredictor, n: int = 2) -> list[dict[str, Any]]:
    values = {"amount": [1.5] * n, "count": [2] * n, "flag": [True] * n, "color": ["red"] * n}
    types = {"amount": "FP64", "count": "INT64", "flag": "BOOL", "color": "BYTES"}
    return [{"name": k, "shape": [n], "datatype": types[k], "data": values[k]} for k in hgb.names]


def test_the_named_output_is_accepted_and_others_refused(xgb: BundlePredictor) -> None:
    inputs = [{"name": "x", "shape": [1, 30], "datatype": "FP64", "data": [0.5] * 30}]
    matrix, _ = decode(xgb, inputs, outputs=[{"name": "probability"}])
    assert matrix.shape == (1, 30)
    assert decode_message(xgb, inputs, outputs=[{"name": "probability"}, {"name": "label"}]) == (
        "unknown output 'label'; this model returns 'probability'"
    )


def test_decode_refusals(xgb: BundlePredictor, hgb: BundlePredictor) -> None:
    assert decode_message(xgb, []) == "request has no inputs"
    bad = [{"name": "x", "shape": [1, 30], "datatype": "STRING", "data": [0.5] * 30}]
    assert decode_message(xgb, bad) == "input 'x' has unknown datatype 'STRING'"
    bad = [{"name": "x", "shape": [-1, 30], "datatype": "FP32", "data": [0.5] * 30}]
    assert decode_message(xgb, bad) == "input 'x' has negative dimensions [-1, 30]"
    twice = [*columns_of(hgb), columns_of(hgb)[0]]
    assert decode_message(hgb, twice) == "input 'amount' appears twice"
    wide = columns_of(hgb)
    wide[1] = {**wide[1], "shape": [1, 2]}
    assert decode_message(hgb, wide) == (
        "input 'count' has shape [1, 2]; send either one [n, 4] tensor or one [n] tensor per feature"
    )
    assert decode_message(hgb, [{**c, "shape": [2, 2, 1]} for c in columns_of(hgb)]).startswith(
        "input 'amount' has shape [2, 2, 1]; send either"
    )
    assert decode_message(hgb, columns_of(hgb, 0)) == "request has no rows"
    with pytest.raises(PayloadTooLargeError):
        decode(hgb, columns_of(hgb, 4))
    assert decode(hgb, columns_of(hgb, 3))[0].shape == (3, 4)  # exactly max_rows


def test_a_single_column_tensor_per_feature(hgb: BundlePredictor) -> None:
    inputs = [{**c, "shape": [2, 1], "data": [[v] for v in c["data"]]} for c in columns_of(hgb)]
    matrix, sent = decode(hgb, inputs)
    plain, _ = decode(hgb, columns_of(hgb))
    np.testing.assert_array_equal(matrix, plain)
    assert sent.records() == [{"amount": 1.5, "count": 2, "flag": True, "color": "red"}] * 2


def test_single_matrix_refusals(xgb: BundlePredictor, hgb: BundlePredictor) -> None:
    bad = [{"name": "x", "shape": [1, 29], "datatype": "FP32", "data": [0.5] * 29}]
    assert decode_message(xgb, bad) == "input 'x' has shape [1, 29], model expects [n, 30]"
    for datatype in ("BOOL", "BYTES"):
        bad = [{"name": "x", "shape": [1, 30], "datatype": datatype, "data": [True] * 30}]
        assert decode_message(xgb, bad) == (
            f"input 'x' has datatype {datatype}; a single tensor must be numeric"
            " (send one tensor per feature to pass category or boolean values)"
        )
    bad = [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.5] * 4}]
    assert decode_message(hgb, bad) == (
        "model has category or boolean features ['flag', 'color']; send one input tensor per feature, not one matrix"
    )
    assert decode_message(xgb, [{"name": "x", "shape": [0, 30], "datatype": "FP32", "data": []}]) == (
        "request has no rows"
    )
    with pytest.raises(PayloadTooLargeError):
        decode(xgb, [{"name": "x", "shape": [4, 30], "datatype": "FP32", "data": [0.5] * 120}])


def test_single_matrix_slow_path_values(xgb: BundlePredictor) -> None:
    # A null is a missing value for a nullable feature, refused (naming row and feature) for the others.
    values: list[Any] = [0.5] * 60
    values[31] = None
    spec = xgb.schema.features[1]
    inputs = [{"name": "x", "shape": [2, 30], "datatype": "FP64", "data": values}]
    if spec.nullable:
        matrix, sent = decode(xgb, inputs)
        assert math.isnan(matrix[1, 1]) and sent.value(1, 1) is None
    else:
        assert decode_message(xgb, inputs).startswith(f"row 1, feature {spec.name!r} (")
    # Integers sent in binary take the per-value path and arrive exactly.
    raw = np.arange(60, dtype="<i4")
    head = {"inputs": [{"name": "x", "shape": [2, 30], "datatype": "INT32", "parameters": {"binary_data_size": 240}}]}
    matrix, sent = v2_decode(xgb, v2_request(*binary(head, raw.tobytes())))
    np.testing.assert_array_equal(matrix, raw.reshape(2, 30).astype(np.float32))
    assert isinstance(sent, SentFlat)
    assert sent.value(1, 2) == 32 and type(sent.value(1, 2)) is int
    assert sent.records()[1] == dict(zip(xgb.names, range(30, 60), strict=True))
    # A float array out of float32's range is refused by the per-value check, not scored as infinity.
    big = np.full(30, 1e300, dtype="<f8")
    head = {"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP64", "parameters": {"binary_data_size": 240}}]}
    with pytest.raises(InvalidInputError, match="must be finite"):
        v2_decode(xgb, v2_request(*binary(head, big.tobytes())))


def test_single_matrix_fast_path_keeps_the_values_as_sent(xgb: BundlePredictor) -> None:
    floats = np.linspace(0, 1, 60, dtype="<f4")
    head = {"inputs": [{"name": "x", "shape": [2, 30], "datatype": "FP32", "parameters": {"binary_data_size": 240}}]}
    matrix, sent = v2_decode(xgb, v2_request(*binary(head, floats.tobytes())))
    np.testing.assert_array_equal(matrix, floats.reshape(2, 30))
    assert sent.value(1, 0) == float(floats[30]) and type(sent.value(1, 0)) is float
    ints = list(range(60))
    matrix, sent = decode(xgb, [{"name": "x", "shape": [2, 30], "datatype": "INT64", "data": ints}])
    np.testing.assert_array_equal(matrix, np.arange(60, dtype=np.float32).reshape(2, 30))
    assert sent.records()[0] == dict(zip(xgb.names, range(30), strict=True))


def test_tensor_data_shape_refusals(xgb: BundlePredictor) -> None:
    bad = [{"name": "x", "shape": [1, 30], "datatype": "FP32", "data": {"a": 1}}]
    assert decode_message(xgb, bad) == "input 'x': tensor data must be a list, got dict"
    bad = [{"name": "x", "shape": [2, 30], "datatype": "FP32", "data": [[0.5] * 30]}]
    assert decode_message(xgb, bad) == "input 'x': nested data does not match its shape [2, 30] at depth 0"
    bad = [{"name": "x", "shape": [1, 30], "datatype": "FP32", "data": [[[0.5]] * 30]}]
    assert decode_message(xgb, bad) == "input 'x': data is nested deeper than its shape [1, 30]"
    bad = [{"name": "x", "shape": [1, 30], "datatype": "FP32", "data": [0.5] * 29}]
    assert decode_message(xgb, bad) == "input 'x' has 29 values, its shape [1, 30] needs 30"


# ------------------------------------------------------------------------------------ answers and metadata


@pytest.mark.parametrize(
    ("outputs", "parameters", "expected"),
    [
        ([{"name": "probability", "parameters": {"other": 1}}], {"binary_data_output": True}, True),
        ([{"name": "probability", "parameters": [1]}], {"binary_data_output": True}, True),
        ([{"name": "probability", "parameters": None}], {}, False),
        ([{"name": "probability", "parameters": {"binary_data": 1}}], {"binary_data_output": False}, True),
        ([], {"binary_data_output": 0}, False),
        ([], {}, False),
    ],
)
def test_binary_output_choice(outputs: list[dict[str, Any]], parameters: dict[str, Any], expected: bool) -> None:
    assert V2Request(None, [], outputs, parameters).binary_output is expected


def test_model_metadata_numeric_and_mixed(xgb: BundlePredictor, hgb: BundlePredictor) -> None:
    assert model_metadata("m", ["", "2", "3"], xgb) == {
        "name": "m",
        "versions": ["2", "3"],
        "platform": "xgboost",
        "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 30]}],
        "outputs": [{"name": "probability", "datatype": "FP64", "shape": [-1]}],
    }
    assert model_metadata("h", [], hgb) == {
        "name": "h",
        "versions": [],
        "platform": "hist_gradient_boosting",
        "inputs": [
            {"name": "amount", "datatype": "FP64", "shape": [-1]},
            {"name": "count", "datatype": "FP64", "shape": [-1]},
            {"name": "flag", "datatype": "FP64", "shape": [-1]},
            {"name": "color", "datatype": "BYTES", "shape": [-1]},
        ],
        "outputs": [{"name": "probability", "datatype": "FP64", "shape": [-1]}],
    }


def test_a_bytes_length_past_two_gibibytes_is_refused_not_read_as_negative() -> None:
    # The length prefix is unsigned: 2**31 is a length that runs past the data, not -2**31.
    assert message(bytes_tensor, struct.pack("<I", 2**31) + b"abc") == (
        "input 'c': BYTES element of 2147483648 bytes runs past the tensor's binary data"
    )


@pytest.mark.parametrize("odd", ["1.5", True, None])
def test_a_single_json_matrix_with_a_non_number_is_checked_per_value(xgb: BundlePredictor, odd: Any) -> None:
    values: list[Any] = [0.5] * 30
    values[4] = odd
    with pytest.raises(InvalidInputError, match=rf"^row 0, feature {xgb.names[4]!r} \(float\) "):
        decode(xgb, [{"name": "x", "shape": [1, 30], "datatype": "FP64", "data": values}])


def test_binary_scores_are_eight_byte_floats_whatever_the_input_dtype() -> None:
    from hybridml.serving.protocol import v2_response

    request = V2Request(None, [], [], {"binary_data_output": True})
    body, headers = v2_response("m", "1", request, "id", np.array([0.25, 0.5], dtype=np.float32))
    length = int(headers[INFERENCE_HEADER])
    assert orjson.loads(body[:length])["outputs"][0]["parameters"] == {"binary_data_size": 16}
    assert np.frombuffer(body[length:], dtype="<f8").tolist() == [0.25, 0.5]


def test_the_matrix_refusal_lists_at_most_five_category_features(tmp_path: Path) -> None:
    import pandas as pd

    from hybridml.core.data import encode_features, encode_labels, infer_schema
    from hybridml.core.model import fit, save_bundle

    frame = pd.DataFrame({f"c{i}": ["a", "b", "c", "d"] * 10 for i in range(7)})
    frame["y"] = ["n", "p"] * 20
    schema = infer_schema(frame, "y")
    fitted = fit("logistic_regression", {}, encode_features(frame, schema), encode_labels(frame, schema))
    predictor = BundlePredictor.load(save_bundle(fitted, "logistic_regression", {}, schema, tmp_path / "b").path)
    assert decode_message(predictor, [{"name": "x", "shape": [1, 7], "datatype": "FP32", "data": [0.0] * 7}]) == (
        "model has category or boolean features ['c0', 'c1', 'c2', 'c3', 'c4']; send one input tensor per feature,"
        " not one matrix"
    )
