"""The KServe model that serves a hybridml bundle over V1 and V2 (Open Inference Protocol); server process only."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import kserve
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse

from hybridml.errors import HybridmlError, InvalidInputError, PayloadTooLargeError
from hybridml.serving.predictor import DEFAULT_MAX_ROWS, BundlePredictor

OUTPUT_NAME = "probability"
STABLE = "stable"
CANARY = "canary"
HEADER_MODEL = "X-Hybridml-Model"
HEADER_VERSION = "X-Hybridml-Version"
HEADER_VARIANT = "X-Hybridml-Variant"

# V2 datatypes whose JSON data are plain numbers; BYTES/BOOL go through the per-feature form.
_NUMERIC_DATATYPES = frozenset(
    {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)
_ALL_DATATYPES = _NUMERIC_DATATYPES | {"BOOL", "BYTES"}


class HybridmlModel(kserve.Model):
    """Serves one bundle (the stable variant) and optionally a canary that gets ``canary_percent`` of requests.

    Args:
        name: model name in the URL (``/v1/models/NAME:predict``, ``/v2/models/NAME/infer``).
        model_dir: the stable bundle.
        version: the stable version, reported in the ``X-Hybridml-Version`` header.
        canary_dir: an optional second bundle; must have the same feature names as the stable one.
        canary_version: the canary's version.
        canary_percent: share of requests (0-100) the canary answers.
        seed: seed of the random traffic split (None: unseeded).
        max_rows: largest batch accepted per request.
    """

    def __init__(
        self,
        name: str,
        model_dir: str | Path,
        *,
        version: str = "",
        canary_dir: str | Path | None = None,
        canary_version: str = "",
        canary_percent: int = 0,
        seed: int | None = None,
        max_rows: int = DEFAULT_MAX_ROWS,
    ) -> None:
        super().__init__(name, return_response_headers=True)
        if not 0 <= canary_percent <= 100:
            raise InvalidInputError(f"canary percent must be in [0, 100], got {canary_percent}")
        if canary_dir is None and canary_percent:
            raise InvalidInputError("a canary percent needs a canary model directory")
        self.model_dir = Path(model_dir)
        self.version = version
        self.canary_dir = None if canary_dir is None else Path(canary_dir)
        self.canary_version = canary_version
        self.canary_percent = canary_percent
        self.max_rows = max_rows
        self._random = random.Random(seed)  # noqa: S311 - traffic splitting, not security
        self.variants: dict[str, tuple[BundlePredictor, str]] = {}

    def load(self) -> bool:
        """Load the stable (and canary) bundles; raises InvalidInputError for a bad bundle."""
        stable = BundlePredictor.load(self.model_dir, max_rows=self.max_rows)
        self.variants = {STABLE: (stable, self.version)}
        if self.canary_dir is not None:
            canary = BundlePredictor.load(self.canary_dir, max_rows=self.max_rows)
            if canary.feature_names != stable.feature_names:
                # One endpoint, one request contract: a client cannot know which variant will answer.
                raise InvalidInputError(
                    f"canary {self.canary_dir} has features {canary.feature_names[:5]}..., which differ from the"
                    f" stable model's {stable.feature_names[:5]}..."
                )
            self.variants[CANARY] = (canary, self.canary_version)
        self.ready = True
        return True

    def validate(self, payload: Any) -> Any:
        """Pass everything through: :meth:`predict` validates against the schema with better messages."""
        return payload

    def _pick_variant(self) -> str:
        if CANARY in self.variants and self._random.random() * 100 < self.canary_percent:
            return CANARY
        return STABLE

    def predict(
        self,
        payload: dict[str, Any] | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        """Score a V1 body (``{"instances": [...]}`` / ``{"inputs": ...}``) or a V2 :class:`InferRequest`.

        Raises:
            kserve.errors.InvalidInput: the request does not fit the model (HTTP 400, message names the problem).
            PayloadTooLargeError: too many rows (HTTP 413 via the handler installed by :func:`install_error_handlers`).
        """
        variant = self._pick_variant()
        predictor, version = self.variants[variant]
        if response_headers is not None:
            response_headers.update({HEADER_MODEL: self.name, HEADER_VERSION: version, HEADER_VARIANT: variant})
        try:
            if isinstance(payload, InferRequest):
                return self._predict_v2(predictor, payload, version)
            kind, data = v1_rows(payload)
            matrix = predictor.encode(data) if kind == "rows" else predictor.encode_columns(data)
            return {"predictions": predictor.scores(matrix).tolist()}
        except PayloadTooLargeError:
            raise
        except InvalidInputError as exc:
            raise InvalidInput(exc.message) from exc

    def _predict_v2(self, predictor: BundlePredictor, request: InferRequest, version: str) -> InferResponse:
        for wanted in request.request_outputs or []:
            if wanted.name != OUTPUT_NAME:
                raise InvalidInputError(f"unknown output {wanted.name!r}; this model returns {OUTPUT_NAME!r}")
        matrix = _v2_matrix(predictor, request.inputs)
        scores = predictor.scores(matrix)
        output = InferOutput(name=OUTPUT_NAME, shape=[len(scores)], datatype="FP64", data=scores.tolist())
        return InferResponse(
            response_id=request.id or str(uuid.uuid4()),
            model_name=self.name,
            model_version=version or None,
            infer_outputs=[output],
            use_binary_outputs=request.use_binary_outputs,
            requested_outputs=request.request_outputs,
        )


def _v2_matrix(predictor: BundlePredictor, inputs: Sequence[InferInput]) -> np.ndarray:
    """Validate V2 inputs: one [n, n_features] numeric tensor, or one [n] tensor per feature named by feature."""
    if not inputs:
        raise InvalidInputError("request has no inputs")
    for tensor in inputs:
        if tensor.datatype not in _ALL_DATATYPES:
            raise InvalidInputError(f"input {tensor.name!r} has unknown datatype {tensor.datatype!r}")
    if len(inputs) == 1 and len(inputs[0].shape) == 2:
        tensor = inputs[0]
        n, width = tensor.shape
        if width != predictor.n_features:
            raise InvalidInputError(
                f"input {tensor.name!r} has shape {list(tensor.shape)}, model expects [n, {predictor.n_features}]"
            )
        if tensor.datatype not in _NUMERIC_DATATYPES:
            raise InvalidInputError(
                f"input {tensor.name!r} has datatype {tensor.datatype}; a single tensor must be numeric"
                " (send one tensor per feature to pass category or boolean values)"
            )
        categorical = [f.name for f in predictor.schema.features if f.dtype == "category"]
        if categorical:
            raise InvalidInputError(
                f"model has category features {categorical[:5]}; send one input tensor per feature, not one matrix"
            )
        values = _tensor_values(tensor, n * width)
        return predictor.encode([values[i * width : (i + 1) * width] for i in range(n)])
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
        columns[tensor.name] = _tensor_values(tensor, size)
    return predictor.encode_columns(columns)


def _tensor_values(tensor: InferInput, expected: int) -> list[Any]:
    """The tensor's elements as a flat Python list, checked against the size its shape declares."""
    data = tensor.data
    if any(d < 0 for d in tensor.shape):
        raise InvalidInputError(f"input {tensor.name!r} has negative dimensions {list(tensor.shape)}")
    values = data.reshape(-1).tolist() if isinstance(data, np.ndarray) else _flatten(data)
    if tensor.datatype == "BYTES":
        values = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in values]
    if len(values) != expected:
        raise InvalidInputError(
            f"input {tensor.name!r} has {len(values)} values, its shape {list(tensor.shape)} needs {expected}"
        )
    return values


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise InvalidInputError(f"tensor data must be a list, got {type(data).__name__}")
    if not any(isinstance(v, list) for v in data):
        return data
    flat: list[Any] = []
    for v in data:
        flat.extend(_flatten(v) if isinstance(v, list) else [v])
    return flat


def v1_rows(payload: Any) -> tuple[str, Any]:
    """Split a V1 body into ("rows", list) or ("columns", dict), rejecting anything else."""
    if isinstance(payload, bytes | str):
        raise InvalidInputError("request body must be JSON with content-type application/json")
    if not isinstance(payload, dict):
        raise InvalidInputError(f"request body must be a JSON object with 'instances', got {type(payload).__name__}")
    if ("instances" in payload) == ("inputs" in payload):
        raise InvalidInputError("request body must have exactly one of 'instances' or 'inputs'")
    if "instances" in payload:
        data = payload["instances"]
        if not isinstance(data, list):
            raise InvalidInputError(f"'instances' must be a list of rows, got {type(data).__name__}")
        return "rows", data
    data = payload["inputs"]
    if isinstance(data, dict):
        return "columns", data
    if isinstance(data, list):
        return "rows", data
    raise InvalidInputError(f"'inputs' must be a list of rows or an object of columns, got {type(data).__name__}")


def install_error_handlers(app: FastAPI) -> None:
    """Make every client mistake a 4xx with a JSON ``{"error": ...}`` body, as KServe does for its own errors.

    FastAPI answers a V2 body that fails its schema (including malformed JSON) with 422 and a ``detail`` list;
    hybridml errors (e.g. 413 for too many rows) would otherwise fall into KServe's catch-all 500.
    """

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        errors = exc.errors() if isinstance(exc, RequestValidationError) else []
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in errors[:3]]
        return JSONResponse(status_code=400, content={"error": "invalid request body: " + "; ".join(parts)})

    async def hybridml_error(_: Request, exc: Exception) -> JSONResponse:
        status = exc.http_status if isinstance(exc, HybridmlError) else 500
        return JSONResponse(status_code=status, content={"error": str(exc)})

    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HybridmlError, hybridml_error)


def serve(model: HybridmlModel, *, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Load ``model`` and run the KServe REST server on ``host:port`` until SIGTERM/SIGINT (gRPC disabled).

    Raises:
        InvalidInputError: the bundle(s) cannot be loaded.
    """
    from kserve.model_server import app

    class _BoundModelServer(kserve.ModelServer):
        # KServe 0.21 hard-codes host="0.0.0.0" in RESTServer; this hook runs after the server object is built
        # and before uvicorn binds, so the listening address can be narrowed to the one asked for.
        def setup_event_loop(self) -> None:
            if self._rest_server is None:
                raise RuntimeError("host binding needs the single-worker REST server")
            self._rest_server.config.host = host
            super().setup_event_loop()

    model.load()
    install_error_handlers(app)
    # gRPC stays off: KServe binds it on every interface with no option to narrow it.
    server = _BoundModelServer(http_port=port, workers=1, enable_grpc=False)
    _harden_decode(server.dataplane)
    server.start([model])


def _harden_decode(dataplane: Any) -> None:
    """Turn any failure to parse a request body into InvalidInput (400).

    KServe's binary V2 decoding lets ValueError/KeyError escape for a bad ``inference-header-content-length``
    or a JSON header without ``inputs``, which its catch-all turns into a 500; decoding only reads what the
    client sent, so every failure there is the client's.
    """
    decode = dataplane.decode

    def checked_decode(*args: Any, **kwargs: Any) -> Any:
        try:
            return decode(*args, **kwargs)
        except InvalidInput:
            raise
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"cannot decode request body: {type(exc).__name__}: {exc}") from exc

    dataplane.decode = checked_decode
