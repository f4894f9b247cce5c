"""SageMaker's container contract over the project's predictor: ``serve``, ``GET /ping``, ``POST /invocations``.

SageMaker starts the image with the argument ``serve``, unpacks ``model.tar.gz`` into ``/opt/ml/model``, sends
health checks to ``GET /ping`` and requests to ``POST /invocations`` on port 8080. This module turns those
into calls of the same :class:`~hybridml.serving.app.InferenceApp` the KServe routes use: one validation (the
bundle's schema), one payload log, one set of Prometheus metrics. Only the wire formats are added here:

- ``text/csv``: one row per line in schema feature order, no header; an empty cell is a missing value, numeric
  cells are numbers, category cells are text (kept as sent, so ``"1"`` stays the category ``"1"``), boolean
  cells ``true``/``false``/``1``/``0``. The answer is one positive-class probability per line.
- ``application/json``: a V1 body (``{"instances": rows}`` or ``{"inputs": rows|columns}``) or a bare list of
  rows (lists in feature order or objects of named values). The answer is ``{"predictions": [...]}``.

The answer's format follows ``Accept`` (``text/csv`` or ``application/json``), else the request's. Every other
path (``/metrics``, ``/feedback``, the KServe routes) is served by the wrapped app as usual.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hybridml.core.schema import BOOLEAN, CATEGORY
from hybridml.errors import HybridmlError, InvalidInputError
from hybridml.serving import protocol
from hybridml.serving.app import (
    InferenceApp,
    Receive,
    Response,
    Scope,
    Send,
    error_response,
    json_response,
    lifespan,
    read_body,
    send_response,
)
from hybridml.serving.predictor import DEFAULT_MAX_ROWS, BundlePredictor

CSV = "text/csv"
JSON = "application/json"
log = logging.getLogger("hybridml.serving")
DEFAULT_MODEL_DIR = "/opt/ml/model"
DEFAULT_PORT = 8080
# Environment SageMaker (or the deploy target's CreateModel ``Environment``) sets; read once in :func:`main`.
MODEL_DIR_ENV = "SM_MODEL_DIR"
PORT_ENV = "SAGEMAKER_BIND_TO_PORT"  # set by SageMaker when the container must listen elsewhere than 8080
NAME_ENV = "HYBRIDML_MODEL_NAME"
VERSION_ENV = "HYBRIDML_MODEL_VERSION"
# SageMaker's own limit on a real-time request is 6 MB; a little room above it, and 413 beyond.
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})

Cell = Callable[[str], Any]


def _number(text: str) -> Any:
    if not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        return text  # the predictor refuses it with its own message (row, feature, value)


def _category(text: str) -> Any:
    return text if text else None


def _boolean(text: str) -> Any:
    lowered = text.strip().lower()
    if not lowered:
        return None
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return text


def _cell_parsers(predictor: BundlePredictor) -> list[Cell]:
    """How each CSV cell becomes a request value: CSV has no types, the schema gives them (no checking here)."""
    kinds = {CATEGORY: _category, BOOLEAN: _boolean}
    return [kinds.get(spec.dtype, _number) for spec in predictor.schema.features]


def csv_rows(predictor: BundlePredictor, body: bytes, parsers: Sequence[Cell] | None = None) -> list[list[Any]]:
    """The rows of a ``text/csv`` body as request values in feature order (validated later by the predictor).

    Blank lines are skipped (for a one-feature model a blank line is a missing value). A row whose width is
    not the schema's is passed through as text, so the predictor names it.

    Raises:
        InvalidInputError: the body is not UTF-8 or not CSV, or its first line is a header of feature names.
    """
    try:
        text = body.decode("utf-8-sig")  # a byte-order mark from spreadsheet exports is not part of the data
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"text/csv body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    parsers = parsers if parsers is not None else _cell_parsers(predictor)
    width = len(parsers)
    rows: list[list[Any]] = []
    try:
        for line in csv.reader(io.StringIO(text, newline=""), strict=True):
            if not line:
                if width == 1:
                    rows.append([None])
                continue
            if len(line) != width:
                rows.append(list(line))
                continue
            rows.append([parse(cell) for parse, cell in zip(parsers, line, strict=True)])
    except csv.Error as exc:
        raise InvalidInputError(f"text/csv body is not valid CSV: {exc}") from None
    if rows and list(map(str, rows[0])) == list(predictor.names):
        raise InvalidInputError("text/csv body starts with a header row; send data rows only, in feature order")
    return rows


def json_decode(predictor: BundlePredictor, body: bytes) -> tuple[np.ndarray, protocol.Sent]:
    """An ``application/json`` body: a V1 object (``instances``/``inputs``) or a bare list of rows."""
    if body.lstrip()[:1] != b"[":
        return protocol.v1_matrix(predictor, body)
    rows = protocol.loads(body)
    return predictor.encode(rows), protocol.SentRows(rows, predictor.names)


def csv_answer(scores: np.ndarray) -> bytes:
    """One probability per line (shortest repr that reads back to the same float)."""
    return "".join(f"{x!r}\n" for x in scores.tolist()).encode()


def media_type(value: str | None) -> str:
    """The bare media type of a Content-Type/Accept value, lower case (``text/csv; charset=utf-8`` → ``text/csv``)."""
    return (value or "").split(";", 1)[0].strip().lower()


def answer_type(accept: str | None, request_type: str) -> str | None:
    """The answer's media type: the first of ``Accept`` that this server writes, else the request's; None: none fits."""
    if not accept:
        return request_type
    for item in accept.split(","):
        wanted = media_type(item)
        if wanted in (CSV, JSON):
            return wanted
        if wanted == "*/*":
            return request_type
        if wanted in ("text/*", "application/*"):
            return CSV if wanted == "text/*" else JSON
    return None


class SageMakerApp:
    """ASGI app of SageMaker's inference container contract over one :class:`InferenceApp`.

    Args:
        app: the model's inference app; its predictor validates, its metrics count, its payload log records.
    """

    def __init__(self, app: InferenceApp) -> None:
        self.app = app
        self._parsers = _cell_parsers(app.predictor)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry: ``/ping`` and ``/invocations`` here, every other path to the wrapped app."""
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path not in ("/ping", "/invocations"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = await read_body(scope, receive, headers, self.app.max_body_bytes)
        response = body if isinstance(body, Response) else await self.handle(scope["method"], path, headers, body)
        await send_response(send, response)

    async def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Answer ``/ping`` or ``/invocations``; client mistakes are 4xx JSON errors, never a 500."""
        if path == "/ping":
            if method not in ("GET", "HEAD"):
                return error_response(405, f"method {method} is not allowed on /ping")
            ready = self.app.ready
            return json_response({"status": "healthy" if ready else "loading"}, 200 if ready else 503)
        if method != "POST":
            return error_response(405, f"method {method} is not allowed on /invocations")
        request_type = media_type(headers.get("content-type"))
        if request_type not in (CSV, JSON):
            self.app.metrics.request(415)
            return error_response(
                415, f"content type {request_type[:100] or '(none)'!r} is not supported; send {CSV} or {JSON}"
            )
        wanted = answer_type(headers.get("accept"), request_type)
        if wanted is None:
            self.app.metrics.request(406)
            return error_response(406, f"cannot answer in {headers.get('accept', '')[:100]!r}; accept {CSV} or {JSON}")
        predictor = self.app.predictor

        def decode() -> tuple[np.ndarray, protocol.Sent]:
            if request_type == JSON:
                return json_decode(predictor, body)
            rows = csv_rows(predictor, body, self._parsers)
            return predictor.encode(rows), protocol.SentRows(rows, predictor.names)

        def encode(scores: np.ndarray, _: str) -> bytes:
            return csv_answer(scores) if wanted == CSV else protocol.v1_response(scores)

        try:
            return await self.app.infer(dict(headers), decode, encode, content_type=wanted.encode())
        except HybridmlError as exc:  # a bad x-request-id header, refused before decoding
            return error_response(exc.http_status, exc.message)
        except Exception:  # a server bug: log it, answer 500 without internals (as the KServe routes do)
            log.exception("unexpected error on %s %s", method, path)
            return error_response(500, "internal server error")


# ----------------------------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    """Flags of ``python -m hybridml.serving serve`` (the model directory comes from ``SM_MODEL_DIR``)."""
    parser = argparse.ArgumentParser(
        prog="python -m hybridml.serving serve",
        description=(
            "Serve the bundle in $SM_MODEL_DIR (default /opt/ml/model) by SageMaker's container contract:"
            " GET /ping, POST /invocations (text/csv, application/json)."
        ),
        allow_abbrev=False,
    )
    parser.add_argument(
        "--bind-host", default="127.0.0.1",
        help="address to listen on (default loopback; the image's entry point passes 0.0.0.0)",
    )  # fmt: skip
    parser.add_argument(
        "--bind-port", type=int, default=DEFAULT_PORT, help=f"HTTP port (${PORT_ENV} wins when SageMaker sets it)"
    )
    parser.add_argument("--model-name", default=None, help=f"model label in metrics and logs (else ${NAME_ENV})")
    parser.add_argument("--model-version", default=None, help=f"version label (else ${VERSION_ENV})")
    parser.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS, help="largest batch accepted per request")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help="413 above this size")
    parser.add_argument("--payload-log", default=None, help="JSON-lines file of requests and predictions")
    parser.add_argument("--payload-log-max-bytes", type=int, default=None, help="rotate the payload log at this size")
    parser.add_argument("--payload-log-keep", type=int, default=None, help="rotated payload log files kept")
    parser.add_argument("--no-batching", action="store_true", help="score each request alone (no micro-batching)")
    parser.add_argument("--batch-wait-ms", type=float, default=0.0, help="longest wait to fill a micro-batch")
    return parser


def settings(argv: Sequence[str], environ: Mapping[str, str]) -> tuple[argparse.Namespace, Path]:
    """The parsed flags, completed from the environment, as :func:`hybridml.serving.runtime.build_app` takes them.

    Returns:
        (args, model directory).

    Raises:
        InvalidInputError: a bad port in ``SAGEMAKER_BIND_TO_PORT``, or no model directory.
    """
    from hybridml.serving.payload_log import DEFAULT_KEEP, DEFAULT_MAX_BYTES

    args = build_parser().parse_args(list(argv))
    port_text = environ.get(PORT_ENV, "").strip()
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise InvalidInputError(f"{PORT_ENV} must be a port in 1-65535, got {port_text[:20]!r}")
        args.bind_port = int(port_text)
    model_dir = Path(environ.get(MODEL_DIR_ENV) or DEFAULT_MODEL_DIR)
    if not model_dir.is_dir():
        raise InvalidInputError(f"model directory {model_dir} does not exist (SageMaker unpacks model.tar.gz there)")
    args.model_name = args.model_name or environ.get(NAME_ENV) or "model"
    args.model_version = args.model_version if args.model_version is not None else environ.get(VERSION_ENV, "")
    args.variant = "stable"
    args.feedback_log = None
    if args.payload_log_max_bytes is None:
        args.payload_log_max_bytes = DEFAULT_MAX_BYTES
    if args.payload_log_keep is None:
        args.payload_log_keep = DEFAULT_KEEP
    return args, model_dir


def is_serve(argv: Sequence[str]) -> bool:
    """Whether ``argv`` asks for SageMaker mode: the bare word ``serve``, and no KServe model flag."""
    return "serve" in argv and not any(a.startswith(("--model-dir", "--model-uri")) for a in argv)


def main(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> int:
    """Run SageMaker mode until SIGTERM; returns the exit code (errors: one line on stderr)."""
    from hybridml.serving.runtime import build_app
    from hybridml.serving.server import run
    from hybridml.serving.storage import check_no_pickle

    environ = os.environ if environ is None else environ
    try:
        args, model_dir = settings([a for a in argv if a != "serve"], environ)
        check_no_pickle(model_dir)
        app = SageMakerApp(build_app(args, model_dir))
    except HybridmlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    run(app, host=args.bind_host, port=args.bind_port, loop="asyncio" if args.no_batching else "uvloop")
    return 0


__all__ = ["SageMakerApp", "answer_type", "csv_answer", "csv_rows", "is_serve", "json_decode", "main", "media_type"]
