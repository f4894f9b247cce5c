"""KServe V1 and V2 (Open Inference Protocol) REST bodies: strict parsing into a model matrix and encoding answers."""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from hybridml.errors import InvalidInputError
from hybridml.serving.predictor import BundlePredictor

OUTPUT_NAME = "probability"
INFERENCE_HEADER = "inference-header-content-length"
_PLAIN_NUMBERS = frozenset({float, int})
# V2 datatypes whose JSON data are plain numbers; BYTES/BOOL go through the per-feature form.
NUMERIC_DATATYPES = frozenset(
    {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)
ALL_DATATYPES = NUMERIC_DATATYPES | {"BOOL", "BYTES"}
_NUMPY_DTYPES = {
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8", "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "BOOL": "?",
}  # fmt: skip


@dataclass
class Tensor:
    """One V2 input tensor as sent (data: a JSON list, or a numpy array decoded from binary data)."""

    name: str
    shape: list[int]
    datatype: str
    data: Any
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class V2Request:
    """A parsed V2 inference request."""

    id: str | None
    inputs: list[Tensor]
    outputs: list[dict[str, Any]]
    parameters: dict[str, Any]

    @property
    def binary_output(self) -> bool:
        """Whether the client asked for the output as binary data (KServe's binary tensor extension)."""
        for wanted in self.outputs:
            params = wanted.get("parameters") or {}
            if isinstance(params, dict) and "binary_data" in params:
                return bool(params["binary_data"])
        return bool(self.parameters.get("binary_data_output", False))


class SentRows:
    """Request values as sent: rows, each a list in feature order or an object of named values.

    Kept as a reference to the parsed body; the payload log and the unknown-category check read it only when
    they need to (no copy on the hot path).
    """

    __slots__ = ("names", "rows")

    def __init__(self, rows: Sequence[Any], names: Sequence[str]) -> None:
        self.rows = rows
        self.names = names

    def value(self, row: int, feature: int) -> Any:
        """The value sent for ``feature`` (schema position) in ``row``."""
        values = self.rows[row]
        return values[self.names[feature]] if isinstance(values, Mapping) else values[feature]

    def records(self) -> list[dict[str, Any]]:
        """One ``{feature: value as sent}`` object per row."""
        names = self.names
        return [dict(r) if isinstance(r, Mapping) else dict(zip(names, r, strict=True)) for r in self.rows]


class SentColumns:
    """Request values as sent: one list of values per feature name (V1 ``inputs`` object, V2 per-feature tensors)."""

    __slots__ = ("columns", "names")

    def __init__(self, columns: Mapping[str, Sequence[Any]], names: Sequence[str]) -> None:
        self.columns = columns
        self.names = names

    def value(self, row: int, feature: int) -> Any:
        """The value sent for ``feature`` (schema position) in ``row``."""
        return self.columns[self.names[feature]][row]

    def records(self) -> list[dict[str, Any]]:
        """One ``{feature: value as sent}`` object per row."""
        names = self.names
        columns = [self.columns[n] for n in names]
        return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


class SentFlat:
    """Request values as sent: one [n, n_features] tensor, flat in row-major order (a list or a numpy array)."""

    __slots__ = ("names", "values")

    def __init__(self, values: Sequence[Any] | np.ndarray, names: Sequence[str]) -> None:
        self.values = values
        self.names = names

    def value(self, row: int, feature: int) -> Any:
        """The value sent for ``feature`` (schema position) in ``row``."""
        value = self.values[row * len(self.names) + feature]
        return value.item() if isinstance(value, np.generic) else value

    def records(self) -> list[dict[str, Any]]:
        """One ``{feature: value as sent}`` object per row."""
        values = self.values.reshape(-1).tolist() if isinstance(self.values, np.ndarray) else self.values
        names, width = self.names, len(self.names)
        return [dict(zip(names, values[i : i + width], strict=True)) for i in range(0, len(values), width)]


Sent = SentRows | SentColumns | SentFlat


def loads(body: bytes) -> Any:
    """Parse JSON, mapping any syntax error to a 400 with KServe's wording."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"Unrecognized request format: {exc}") from None


# ----------------------------------------------------------------------------------------------------- V1


def v1_matrix(predictor: BundlePredictor, body: bytes) -> tuple[np.ndarray, Sent]:
    """Validate a V1 body (``{"instances": rows}`` or ``{"inputs": rows|columns}``); returns (matrix, sent values)."""
    payload = loads(body)
    if not isinstance(payload, dict):
        raise InvalidInputError(f"request body must be a JSON object with 'instances', got {type(payload).__name__}")
    if ("instances" in payload) == ("inputs" in payload):
        raise InvalidInputError("request body must have exactly one of 'instances' or 'inputs'")
    if "instances" in payload:
        data = payload["instances"]
        if not isinstance(data, list):
            raise InvalidInputError(f"'instances' must be a list of rows, got {type(data).__name__}")
        return predictor.encode(data), SentRows(data, predictor.names)
    data = payload["inputs"]
    if isinstance(data, dict):
        return predictor.encode_columns(data), SentColumns(data, predictor.names)
    if isinstance(data, list):
        return predictor.encode(data), SentRows(data, predictor.names)
    raise InvalidInputError(f"'inputs' must be a list of rows or an object of columns, got {type(data).__name__}")


def v1_response(scores: np.ndarray) -> bytes:
    """``{"predictions": [...]}``."""
    return orjson.dumps({"predictions": scores}, option=orjson.OPT_SERIALIZE_NUMPY)


# ----------------------------------------------------------------------------------------------------- V2


def _invalid_body(where: str, problem: str) -> InvalidInputError:
    return InvalidInputError(f"invalid request body: {where}: {problem}")


def v2_request(body: bytes, headers: Mapping[str, str]) -> V2Request:
    """Parse a V2 body, JSON or JSON header + binary tensors (``inference-header-content-length``)."""
    json_length = headers.get(INFERENCE_HEADER)
    raw = b""
    if json_length is not None:
        try:
            length = int(json_length)
        except ValueError:
            raise InvalidInputError(f"{INFERENCE_HEADER} must be an integer, got {json_length[:40]!r}") from None
        if not 0 <= length <= len(body):
            raise InvalidInputError(f"{INFERENCE_HEADER} {length} is outside the body of {len(body)} bytes")
        body, raw = body[:length], body[length:]
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"invalid request body: not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise _invalid_body("body", "must be a JSON object")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list):
        raise _invalid_body("inputs", "must be a list of tensors")
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise _invalid_body("id", "must be a string")
    outputs = payload.get("outputs") or []
    named = isinstance(outputs, list) and all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs)
    if not named:
        raise _invalid_body("outputs", "must be a list of objects with a name")
    parameters = payload.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise _invalid_body("parameters", "must be an object")
    tensors = [_tensor(t, i) for i, t in enumerate(inputs)]
    offset = 0
    for tensor in tensors:
        size = tensor.parameters.get("binary_data_size")
        if size is None:
            continue
        if type(size) is not int or size < 0 or offset + size > len(raw):
            raise InvalidInputError(f"input {tensor.name!r}: binary_data_size {size!r} does not fit the binary data")
        tensor.data = _decode_binary(tensor, raw[offset : offset + size])
        offset += size
    if offset != len(raw):
        raise InvalidInputError(f"{len(raw) - offset} bytes of binary data are not claimed by any input")
    return V2Request(request_id, tensors, outputs, parameters)


def _tensor(raw: Any, i: int) -> Tensor:
    where = f"inputs.{i}"
    if not isinstance(raw, dict):
        raise _invalid_body(where, "must be an object")
    name, shape, datatype = raw.get("name"), raw.get("shape"), raw.get("datatype")
    if not isinstance(name, str):
        raise _invalid_body(f"{where}.name", "field required (a string)")
    if not isinstance(shape, list) or not all(type(d) is int for d in shape):
        raise _invalid_body(f"{where}.shape", "field required (a list of integers)")
    if not isinstance(datatype, str):
        raise _invalid_body(f"{where}.datatype", "field required (a string)")
    parameters = raw.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise _invalid_body(f"{where}.parameters", "must be an object")
    if "data" not in raw and "binary_data_size" not in parameters:
        raise _invalid_body(f"{where}.data", "field required")
    return Tensor(name, shape, datatype, raw.get("data"), parameters)


def _decode_binary(tensor: Tensor, raw: bytes) -> Any:
    if tensor.datatype == "BYTES":
        values: list[str] = []
        pos = 0
        while pos < len(raw):
            if pos + 4 > len(raw):
                raise InvalidInputError(f"input {tensor.name!r}: truncated BYTES element")
            (length,) = struct.unpack_from("<I", raw, pos)
            if pos + 4 + length > len(raw):
                raise InvalidInputError(
                    f"input {tensor.name!r}: BYTES element of {length} bytes runs past the tensor's binary data"
                )
            values.append(raw[pos + 4 : pos + 4 + length].decode("utf-8", "replace"))
            pos += 4 + length
        return values
    dtype = _NUMPY_DTYPES.get(tensor.datatype)
    if dtype is None:
        raise InvalidInputError(f"input {tensor.name!r} has unknown datatype {tensor.datatype!r}")
    if len(raw) % np.dtype(dtype).itemsize:
        raise InvalidInputError(f"input {tensor.name!r}: {len(raw)} bytes are not whole {tensor.datatype} values")
    return np.frombuffer(raw, dtype=dtype)


def v2_matrix(predictor: BundlePredictor, request: V2Request) -> np.ndarray:
    """Validate V2 inputs: one [n, n_features] numeric tensor, or one [n] tensor per feature named by feature."""
    return v2_decode(predictor, request)[0]


def v2_decode(predictor: BundlePredictor, request: V2Request) -> tuple[np.ndarray, Sent]:
    """Like :func:`v2_matrix`, and the values as sent, mapped back to feature names."""
    for wanted in request.outputs:
        if wanted["name"] != OUTPUT_NAME:
            raise InvalidInputError(f"unknown output {wanted['name']!r}; this model returns {OUTPUT_NAME!r}")
    inputs = request.inputs
    if not inputs:
        raise InvalidInputError("request has no inputs")
    for tensor in inputs:
        if tensor.datatype not in ALL_DATATYPES:
            raise InvalidInputError(f"input {tensor.name!r} has unknown datatype {tensor.datatype!r}")
        if any(d < 0 for d in tensor.shape):
            raise InvalidInputError(f"input {tensor.name!r} has negative dimensions {list(tensor.shape)}")
    if len(inputs) == 1 and len(inputs[0].shape) == 2:
        return _single_matrix(predictor, inputs[0])
    columns: dict[str, list[Any]] = {}
    for tensor in inputs:
        if tensor.name in columns:
            raise InvalidInputError(f"input {tensor.name!r} appears twice")
        if len(tensor.shape) == 2 and tensor.shape[1] == 1:
            size = tensor.shape[0]  # [n, 1] is a common way of writing a column
        elif len(tensor.shape) == 1:
            size = tensor.shape[0]
        else:
            raise InvalidInputError(
                f"input {tensor.name!r} has shape {list(tensor.shape)}; send either one [n, {predictor.n_features}]"
                " tensor or one [n] tensor per feature"
            )
        predictor.check_batch_size(size)
        columns[tensor.name] = _tensor_values(tensor, size)
    return predictor.encode_columns(columns), SentColumns(columns, predictor.names)


def _single_matrix(predictor: BundlePredictor, tensor: Tensor) -> tuple[np.ndarray, Sent]:
    n, width = tensor.shape
    if width != predictor.n_features:
        raise InvalidInputError(
            f"input {tensor.name!r} has shape {list(tensor.shape)}, model expects [n, {predictor.n_features}]"
        )
    if tensor.datatype not in NUMERIC_DATATYPES:
        raise InvalidInputError(
            f"input {tensor.name!r} has datatype {tensor.datatype}; a single tensor must be numeric"
            " (send one tensor per feature to pass category or boolean values)"
        )
    if not predictor.all_numeric:
        categorical = [f.name for f in predictor.schema.features if f.dtype in ("category", "bool")]
        raise InvalidInputError(
            f"model has category or boolean features {categorical[:5]}; send one input tensor per feature,"
            " not one matrix"
        )
    predictor.check_batch_size(n)
    data = tensor.data
    # Fast path: a flat list (or binary array) of plain numbers of exactly the declared size.
    if isinstance(data, np.ndarray) and data.size == n * width:
        if data.dtype.kind == "f":
            matrix = predictor.plain_matrix(data, (n, width))
            if matrix is not None:
                return matrix, SentFlat(data, predictor.names)
    elif isinstance(data, list) and len(data) == n * width and not {type(v) for v in data} - _PLAIN_NUMBERS:
        matrix = predictor.plain_matrix(data, (n, width))
        if matrix is not None:
            return matrix, SentFlat(data, predictor.names)
    values = _tensor_values(tensor, n * width)
    return predictor.encode([values[i * width : (i + 1) * width] for i in range(n)]), SentFlat(values, predictor.names)


def _tensor_values(tensor: Tensor, expected: int) -> list[Any]:
    """The tensor's elements as a flat Python list, checked against the size its shape declares."""
    data = tensor.data
    values = data.reshape(-1).tolist() if isinstance(data, np.ndarray) else _flatten(data, tensor)
    if len(values) != expected:
        raise InvalidInputError(
            f"input {tensor.name!r} has {len(values)} values, its shape {list(tensor.shape)} needs {expected}"
        )
    return values


def _flatten(data: Any, tensor: Tensor) -> list[Any]:
    """Flat list of a tensor's JSON data: already flat, or nested exactly as its shape says (nothing ragged)."""
    if not isinstance(data, list):
        raise InvalidInputError(f"input {tensor.name!r}: tensor data must be a list, got {type(data).__name__}")
    if not any(isinstance(v, list) for v in data):
        return data
    level: list[Any] = data
    count = 1
    for depth, size in enumerate(tensor.shape[:-1]):
        count *= size
        # Every element at this depth must be a list, and the elements so far must number prod(shape[:depth+1]).
        inner = tensor.shape[depth + 1]
        if len(level) != count or not all(isinstance(v, list) and len(v) == inner for v in level):
            raise InvalidInputError(
                f"input {tensor.name!r}: nested data does not match its shape {list(tensor.shape)} at depth {depth}"
            )
        level = [v for sub in level for v in sub]
    if any(isinstance(v, list) for v in level):
        raise InvalidInputError(f"input {tensor.name!r}: data is nested deeper than its shape {list(tensor.shape)}")
    return level


def v2_response(
    name: str, version: str, request: V2Request, request_id: str, scores: np.ndarray
) -> tuple[bytes, dict[str, str]]:
    """The V2 answer (JSON, or JSON + binary FP64 data when asked for); returns (body, extra headers)."""
    output: dict[str, Any] = {"name": OUTPUT_NAME, "shape": [len(scores)], "datatype": "FP64"}
    answer: dict[str, Any] = {"model_name": name, "id": request.id or request_id, "outputs": [output]}
    if version:
        answer["model_version"] = version
    if not request.binary_output:
        output["data"] = scores
        return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), {}
    raw = np.ascontiguousarray(scores, dtype="<f8").tobytes()
    output["parameters"] = {"binary_data_size": len(raw)}
    head = orjson.dumps(answer)
    return head + raw, {INFERENCE_HEADER: str(len(head))}


def model_metadata(name: str, versions: Sequence[str], predictor: BundlePredictor) -> dict[str, Any]:
    """V2 model metadata: inputs as one [-1, n_features] FP32 tensor (or one per feature), output probability."""
    if predictor.all_numeric:
        inputs: list[dict[str, Any]] = [{"name": "input-0", "datatype": "FP32", "shape": [-1, predictor.n_features]}]
    else:
        inputs = [
            {"name": f.name, "datatype": "BYTES" if f.dtype == "category" else "FP64", "shape": [-1]}
            for f in predictor.schema.features
        ]
    return {
        "name": name,
        "versions": [v for v in versions if v],
        "platform": predictor.bundle.model_type,
        "inputs": inputs,
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP64", "shape": [-1]}],
    }
