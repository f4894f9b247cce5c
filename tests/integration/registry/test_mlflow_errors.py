"""What MLflow's REST client really raises, classified: a stub server on 127.0.0.1 answers as a busy, conflicting
or refusing tracking server would, and a closed port or a silent one stands for a server that is down."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from hybridml.adapters.mlflow_client import Failure, classify, client, translate
from hybridml.errors import NotReadyError
from hybridml.registry import Registry

pytestmark = pytest.mark.integration


class Answer(BaseHTTPRequestHandler):
    """Answers every request with the class's status and JSON body."""

    status: ClassVar[int] = 503
    body: ClassVar[dict[str, Any]] = {}
    requests: ClassVar[int] = 0

    def _answer(self) -> None:
        type(self).requests += 1
        data = json.dumps(self.body).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_DELETE = _answer  # noqa: N815 - the names http.server calls

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    # One try per call: MLflow's own HTTP retries would only repeat the same answer.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (503, "TEMPORARILY_UNAVAILABLE", Failure.BUSY),  # the server's SQLite was locked
        (500, "INTERNAL_ERROR", Failure.BUSY),  # e.g. MLflow's own version-number retries spent
        (429, "REQUEST_LIMIT_EXCEEDED", Failure.BUSY),
        (409, "ABORTED", Failure.RACE),
        (409, "RESOURCE_CONFLICT", Failure.RACE),
        (404, "RESOURCE_DOES_NOT_EXIST", Failure.NOT_FOUND),
        (400, "RESOURCE_ALREADY_EXISTS", Failure.EXISTS),
        (400, "INVALID_PARAMETER_VALUE", Failure.INVALID),
        (400, "BAD_REQUEST", Failure.INVALID),  # a server-side IntegrityError looks like this: not retried
    ],
)
def test_server_answers(stub: str, status: int, code: str, expected: Failure) -> None:
    Answer.status, Answer.body = status, {"error_code": code, "message": "database is locked; connection reset"}
    with pytest.raises(Exception) as info:  # noqa: PT011 - the exact exception is what is being found out
        client(stub).get_registered_model("m")
    assert classify(info.value) is expected


def test_a_busy_server_is_retried_by_the_registry_then_reported_not_ready(stub: str) -> None:
    Answer.status, Answer.body, Answer.requests = 503, {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "x"}, 0
    sleeps: list[float] = []
    reg = Registry(stub, user="u", attempts=3, sleep=sleeps.append)
    with pytest.raises(NotReadyError, match=f"^model 'm': MLflow at {stub} still busy after 3 attempts"):
        reg.aliases("m")
    assert (Answer.requests, len(sleeps)) == (3, 2)


def test_a_conflict_that_is_not_a_race_is_not_retried(stub: str) -> None:
    Answer.status, Answer.body, Answer.requests = 400, {"error_code": "BAD_REQUEST", "message": "x"}, 0
    reg = Registry(stub, user="u", sleep=lambda _: pytest.fail("must not retry"))
    with pytest.raises(Exception, match="model 'm': BAD_REQUEST: x"):
        reg.aliases("m")
    assert Answer.requests == 1


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends: nothing listens there


def test_a_stopped_server_is_unreachable_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = f"http://127.0.0.1:{closed_port()}"
    reg = Registry(uri, user="u", sleep=lambda _: pytest.fail("must not retry"))
    with pytest.raises(NotReadyError, match=rf"^MLflow at {uri} is not reachable \(connection refused\): model 'm'$"):
        reg.aliases("m")


def test_a_silent_server_is_unreachable_after_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    with socket.socket() as silent:  # accepts connections (the kernel does) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(Exception) as info:  # noqa: PT011
            client(uri).get_registered_model("m")
    assert classify(info.value) is Failure.UNREACHABLE
    expected = f"MLflow at {uri} is not reachable (no answer within 1 s): model 'm'"
    assert str(translate(info.value, "model 'm'", uri)) == expected
