"""A small HTTP client for a hybridml model server (V1 or V2 protocol), raising hybridml errors."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import requests

from hybridml.errors import HybridmlError, InvalidInputError, NotFoundError, NotReadyError, PayloadTooLargeError

PROTOCOLS = ("v1", "v2")
_ERRORS_BY_STATUS: dict[int, type[HybridmlError]] = {
    400: InvalidInputError,
    404: NotFoundError,
    413: PayloadTooLargeError,
    422: InvalidInputError,
    503: NotReadyError,
}


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    # JSON has no NaN: a missing value travels as null, which the server treats as NaN.
    return None if isinstance(value, float) and math.isnan(value) else value


def _v2_body(rows: Sequence[Sequence[Any]] | Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A V2 body: one [n, f] FP64 tensor for positional rows, one [n] tensor per feature for named rows."""
    named = [r for r in rows if isinstance(r, Mapping)]
    if named and len(named) == len(rows):
        names = list(named[0])
        for i, row in enumerate(named):
            # Columns cannot say "this row lacks the feature"; null would mean "missing value", so refuse here.
            if set(row) != set(names):
                lacking = sorted(set(names) - set(row))
                extra = sorted(set(row) - set(names))
                raise InvalidInputError(
                    f"row {i} has different features than row 0 (missing {lacking}, additional {extra})"
                )
        inputs = []
        for name in names:
            values = [_json_value(r.get(name)) for r in named]
            inputs.append({"name": name, "shape": [len(named)], "datatype": _datatype(values), "data": values})
        return {"inputs": inputs}
    if named:
        raise InvalidInputError("rows must be all lists or all objects, not a mix")
    width = len(rows[0]) if rows else 0
    ragged = [i for i, r in enumerate(rows) if len(r) != width]
    if ragged:
        raise InvalidInputError(f"row {ragged[0]} has {len(rows[ragged[0]])} values, row 0 has {width}")
    data = [[_json_value(v) for v in r] for r in rows]
    return {"inputs": [{"name": "input-0", "shape": [len(rows), width], "datatype": "FP64", "data": data}]}


def _datatype(values: list[Any]) -> str:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, str) for v in present):
        return "BYTES"
    if present and all(isinstance(v, bool) for v in present):
        return "BOOL"
    return "FP64"


def _raise_for_status(response: requests.Response) -> None:
    if response.status_code < 400:
        return
    try:
        message = str(response.json().get("error") or response.json())
    except (ValueError, AttributeError):
        message = response.text[:500]
    error = _ERRORS_BY_STATUS.get(response.status_code, HybridmlError)
    raise error(f"model server answered {response.status_code}: {message}")


def predict(
    endpoint: str,
    model_name: str,
    rows: Sequence[Sequence[Any]] | Sequence[Mapping[str, Any]],
    protocol: str = "v2",
    timeout_s: float = 10,
) -> list[float]:
    """Positive-class probability of each row, from the model server at ``endpoint``.

    Args:
        endpoint: base URL, e.g. ``http://127.0.0.1:8080``.
        model_name: name of the model on that server.
        rows: lists of values in feature order, or objects mapping feature names to values.
        protocol: ``v2`` (Open Inference Protocol) or ``v1`` (KServe ``instances``).
        timeout_s: time budget of the HTTP request.

    Raises:
        InvalidInputError: the server rejected the rows (400), with its message; or a bad ``protocol``.
        PayloadTooLargeError: too many rows (413).
        NotFoundError: no model of that name (404).
        NotReadyError: the server is unreachable or not ready (503).
        HybridmlError: any other failure status.
    """
    if protocol not in PROTOCOLS:
        raise InvalidInputError(f"unknown protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})")
    base = endpoint.rstrip("/")
    if protocol == "v1":
        url = f"{base}/v1/models/{model_name}:predict"
        body: dict[str, Any] = {"instances": [_row_json(r) for r in rows]}
    else:
        url = f"{base}/v2/models/{model_name}/infer"
        body = _v2_body(rows)
    try:
        response = requests.post(url, json=body, timeout=timeout_s)
    except requests.RequestException as exc:
        raise NotReadyError(f"cannot reach model server at {endpoint}: {exc}") from exc
    _raise_for_status(response)
    payload = response.json()
    if protocol == "v1":
        return [float(p) for p in payload["predictions"]]
    return [float(p) for p in payload["outputs"][0]["data"]]


def _row_json(row: Sequence[Any] | Mapping[str, Any]) -> Any:
    if isinstance(row, Mapping):
        return {k: _json_value(v) for k, v in row.items()}
    return [_json_value(v) for v in row]


def is_ready(endpoint: str, model_name: str, timeout_s: float = 2) -> bool:
    """Whether the server at ``endpoint`` answers that ``model_name`` is ready (False if unreachable)."""
    try:
        response = requests.get(f"{endpoint.rstrip('/')}/v2/models/{model_name}/ready", timeout=timeout_s)
    except requests.RequestException:
        return False
    return response.status_code == 200
