"""The request-body limit counts the whole body: declared by content-length, or sent in many chunks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from hybridml.serving.app import InferenceApp, Response, read_body
from hybridml.serving.predictor import BundlePredictor

LIMIT = 100


def _receiver(chunks: list[bytes], *, disconnect: bool = False) -> tuple[Any, list[dict[str, Any]]]:
    """An ASGI ``receive`` sending ``chunks`` as one request body (``more_body`` on all but the last)."""
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": chunk, "more_body": disconnect or i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    if disconnect:
        messages.append({"type": "http.disconnect"})
    delivered: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        message = messages.pop(0)
        delivered.append(message)
        return message

    return receive, delivered


def read(chunks: list[bytes], headers: dict[str, str] | None = None, *, disconnect: bool = False) -> Any:
    receive, delivered = _receiver(chunks, disconnect=disconnect)
    result = asyncio.run(read_body({"type": "http"}, receive, headers or {}, LIMIT))
    return result, len(delivered)


def _error(response: Response) -> str:
    message: str = orjson.loads(response.body)["error"]
    return message


@pytest.mark.parametrize(
    "chunks",
    [
        [b"x" * 40, b"x" * 40, b"x" * 21],  # each chunk well under the limit, 101 bytes in total
        [b"x" * LIMIT, b"x"],  # the limit reached, then one byte more
        [b"x"] * (LIMIT + 1),  # one byte at a time
    ],
)
def test_a_chunked_body_over_the_limit_in_total_is_413(chunks: list[bytes]) -> None:
    result, delivered = read(chunks)
    assert isinstance(result, Response)
    assert result.status == 413
    assert _error(result) == f"request body is over the limit of {LIMIT} bytes"
    assert delivered == len(chunks)  # refused at the chunk that crossed the limit


def test_refused_as_soon_as_the_total_crosses_the_limit() -> None:
    result, delivered = read([b"x" * 60, b"x" * 60, b"x" * 60, b"x" * 60])
    assert isinstance(result, Response) and result.status == 413
    assert delivered == 2  # the rest of the body is never read


@pytest.mark.parametrize(
    "chunks",
    [
        [b"a" * 30, b"b" * 30, b"c" * 40],  # exactly the limit
        [b"a" * LIMIT],
        [b"", b"a" * 50, b"", b"b" * 50],  # empty chunks count nothing
        [b""],
        [b"ab", b"cd"],
    ],
)
def test_a_body_up_to_the_limit_is_returned_whole_and_in_order(chunks: list[bytes]) -> None:
    result, _ = read(chunks)
    assert result == b"".join(chunks)


def test_a_disconnect_ends_the_body() -> None:
    result, delivered = read([b"ab", b"cd"], disconnect=True)
    assert result == b"abcd"
    assert delivered == 3


def test_a_declared_length_over_the_limit_is_413_before_reading() -> None:
    result, delivered = read([b"x"], {"content-length": str(LIMIT + 1)})
    assert isinstance(result, Response) and result.status == 413
    assert _error(result) == f"request body of {LIMIT + 1} bytes is over the limit of {LIMIT} bytes"
    assert delivered == 0


def test_a_declared_length_at_the_limit_is_read() -> None:
    body = b"x" * LIMIT
    result, _ = read([body], {"content-length": str(LIMIT)})
    assert result == body


@pytest.mark.parametrize("declared", ["-1", "1.5", "abc", "", " 5"])
def test_a_bad_declared_length_is_400(declared: str) -> None:
    result, delivered = read([b"x"], {"content-length": declared})
    assert isinstance(result, Response) and result.status == 400
    assert _error(result) == "content-length must be a non-negative integer"
    assert delivered == 0


def test_a_small_declared_length_does_not_lift_the_limit_on_what_is_sent() -> None:
    result, _ = read([b"x" * 60, b"x" * 60], {"content-length": "10"})
    assert isinstance(result, Response) and result.status == 413


def test_the_inference_app_answers_a_chunked_oversized_body_with_413(xgb_bundle: Path) -> None:
    app = InferenceApp("cancer", "1", BundlePredictor.load(xgb_bundle), max_body_bytes=LIMIT)
    receive, _ = _receiver([b"{" + b" " * 60, b" " * 60 + b"}"])
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/v2/models/cancer/infer",
        "headers": [],
        "client": None,
    }
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start, end = sent
    assert start["status"] == 413
    assert orjson.loads(end["body"]) == {"error": f"request body is over the limit of {LIMIT} bytes"}


def test_a_scoring_failure_answers_500_without_internals_and_is_counted(
    xgb_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    predictor = BundlePredictor.load(xgb_bundle)
    app = InferenceApp("cancer", "1", predictor)
    body = orjson.dumps({"instances": [[0.0] * len(predictor.schema.features)]})

    def broken(matrix: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(predictor, "scores", broken)
    response = asyncio.run(app.handle("POST", "/v1/models/cancer:predict", {}, body))
    assert (response.status, _error(response)) == (500, "internal server error")
    value = app.metrics.registry.get_sample_value(
        "hybridml_requests_total", {"model": "cancer", "version": "1", "variant": "stable", "code": "500"}
    )
    assert value == 1.0
    monkeypatch.undo()
    assert asyncio.run(app.handle("POST", "/v1/models/cancer:predict", {}, body)).status == 200  # still serving
