"""Control auth, the control app and /feedback on the inference port, driven in-process with ASGI scopes."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

from hybridml.errors import ConflictError, InvalidInputError
from hybridml.serving.__main__ import build_parser
from hybridml.serving.app import InferenceApp
from hybridml.serving.control import (
    TOKEN_ENV,
    ControlApp,
    ControlAuth,
    ControlClient,
    SingleVariant,
    is_loopback_client,
    is_loopback_host,
    read_token,
)
from hybridml.serving.payload_log import JsonLinesLog
from hybridml.serving.predictor import BundlePredictor
from hybridml.serving.router import RouterApp, Worker
from hybridml.serving.runtime import control_settings

TOKEN = "s3cret-token-value"
REMOTE = ("10.0.0.5", 1234)
LOCAL = ("127.0.0.1", 5555)


async def _call(
    app: Any, method: str, path: str, *, client: Any, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    """One HTTP request through an ASGI app as uvicorn would deliver it (client = the TCP peer)."""
    raw_headers = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {"type": "http", "method": method, "path": path, "headers": raw_headers, "client": client}
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, end = sent
    answer_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], answer_headers, orjson.loads(end["body"])


def call(app: Any, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, str], Any]:
    return asyncio.run(_call(app, method, path, **kwargs))


@pytest.mark.parametrize(
    ("client", "authorization", "token", "expected"),
    [
        (("127.0.0.1", 1), None, None, None),
        (("127.0.0.2", 1), None, None, None),  # the whole 127/8 is loopback
        (("::1", 1), None, None, None),
        (("::ffff:127.0.0.1", 1), None, None, None),  # IPv4 loopback on a dual-stack socket
        (REMOTE, None, TOKEN, 401),
        (REMOTE, "Basic dXNlcjpwYXNz", TOKEN, 401),
        (REMOTE, "Bearer", TOKEN, 401),
        (REMOTE, "Bearer wrong", TOKEN, 403),
        (REMOTE, f"Bearer {TOKEN}x", TOKEN, 403),
        (REMOTE, f"Bearer {TOKEN[:-1]}", TOKEN, 403),
        (REMOTE, f"Bearer {TOKEN}", TOKEN, None),
        (REMOTE, f"bearer  {TOKEN} ", TOKEN, None),  # scheme is case-insensitive, spaces around the token dropped
        (REMOTE, f"Bearer {TOKEN}", None, 403),  # no token configured: nobody off loopback gets in
        (REMOTE, "Bearer ünïcode", TOKEN, 403),
        (("::ffff:10.0.0.5", 1), None, TOKEN, 401),
        (None, None, TOKEN, 401),  # unknown peer: not loopback
        (("not-an-address", 1), None, TOKEN, 401),
    ],
)
def test_decide(client: Any, authorization: str | None, token: str | None, expected: int | None) -> None:
    auth = ControlAuth(token.encode() if token else None)
    assert auth.decide(client, authorization) == expected


def test_unix_socket_callers_are_local_and_token_stays_out_of_repr() -> None:
    auth = ControlAuth(TOKEN.encode())
    assert auth.decide(None, None, local_socket=True) is None
    assert TOKEN not in repr(auth) and TOKEN not in str(auth)
    assert repr(ControlAuth()) == "ControlAuth(token=none)"
    assert TOKEN not in repr(ControlClient("http://127.0.0.1:1", TOKEN))


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),
     ("10.0.0.5", False), ("::", False), ("", False)],
)  # fmt: skip
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback
    assert is_loopback_client((host, 1)) is (loopback and host != "localhost")


def test_read_token(tmp_path: Path) -> None:
    file = tmp_path / "token"
    file.write_text(f"{TOKEN}\n")  # a mounted Secret often ends in a newline
    assert read_token(str(file), {}) == TOKEN.encode()
    assert read_token(str(file), {TOKEN_ENV: "from-env"}) == TOKEN.encode()  # the file wins
    assert read_token(None, {TOKEN_ENV: " from-env "}) == b"from-env"
    assert read_token(None, {}) is None
    file.write_text(" \n")
    with pytest.raises(InvalidInputError, match=f"^control token file {file} is empty$"):
        read_token(str(file), {})
    with pytest.raises(InvalidInputError, match=f"^{TOKEN_ENV} is empty$"):
        read_token(None, {TOKEN_ENV: ""})
    with pytest.raises(InvalidInputError, match=r"cannot read control token file .*FileNotFoundError"):
        read_token(str(tmp_path / "missing"), {})


def _args(*flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["--model-dir", "x", "--model-name", "m", *flags])


def test_control_settings(tmp_path: Path) -> None:
    settings = control_settings(_args("--control-port", "9001"), {})
    assert settings.listener is not None
    assert (settings.listener.host, settings.listener.port, settings.auth.token) == ("127.0.0.1", 9001, None)
    with pytest.raises(InvalidInputError) as refused:
        control_settings(_args("--control-port", "9001", "--control-host", "0.0.0.0"), {})
    assert str(refused.value) == (
        "refusing to listen for control on 0.0.0.0: off loopback the control listener needs a token"
        f" (--control-token-file or {TOKEN_ENV})"
    )
    assert refused.value.exit_code == 2
    remote = control_settings(_args("--control-port", "9001", "--control-host", "0.0.0.0"), {TOKEN_ENV: TOKEN})
    assert remote.listener is not None and remote.listener.host == "0.0.0.0"
    assert remote.auth.token == TOKEN.encode()
    unix = control_settings(_args("--control-socket", str(tmp_path / "c.sock")), {})
    assert unix.listener is not None and unix.listener.socket_path == str(tmp_path / "c.sock")
    assert control_settings(_args(), {}).listener is None
    for flags, message in (
        (("--control-port", "1", "--control-socket", "s"), "give --control-port or --control-socket, not both"),
        (("--control-host", "127.0.0.1"), "--control-host needs --control-port"),
        (("--control-port", "70000"), "--control-port must be in 1-65535, got 70000"),
    ):
        with pytest.raises(InvalidInputError, match=f"^{message}$"):
            control_settings(_args(*flags), {})


@pytest.fixture
def inference(hgb_bundle: Path, tmp_path: Path) -> InferenceApp:
    return InferenceApp(
        "mixed",
        "3",
        BundlePredictor.load(hgb_bundle),
        feedback_log=JsonLinesLog(tmp_path / "feedback.jsonl"),
        control_auth=ControlAuth(TOKEN.encode()),
    )


def test_control_app_from_outside_loopback_needs_the_token(
    inference: InferenceApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    control = ControlApp(SingleVariant(inference, pid=42), ControlAuth(TOKEN.encode()))
    status, headers, body = call(control, "GET", "/admin/traffic", client=REMOTE)
    assert (status, headers["www-authenticate"]) == (401, "Bearer")
    assert "Authorization: Bearer" in body["error"]
    wrong = {"authorization": "Bearer nope"}
    assert call(control, "GET", "/admin/traffic", client=REMOTE, headers=wrong)[:3:2] == (
        403,
        {"error": "the bearer token is not accepted"},
    )
    # Refused before anything runs: a promote with a wrong token is 403, not the 409 a promote would give.
    assert call(control, "POST", "/admin/promote", client=REMOTE, headers=wrong)[0] == 403
    good = {"authorization": f"Bearer {TOKEN}"}
    state = {"model": "mixed", "canary_percent": 0, "variants": {"stable": {"version": "3", "pid": 42, "alive": True}}}
    assert call(control, "GET", "/admin/traffic", client=REMOTE, headers=good)[::2] == (200, state)
    assert call(control, "GET", "/admin/traffic", client=LOCAL)[::2] == (200, state)
    assert TOKEN not in caplog.text


def test_control_app_routes_on_a_single_variant(inference: InferenceApp, tmp_path: Path) -> None:
    control = ControlApp(SingleVariant(inference, pid=42), ControlAuth())
    assert call(control, "POST", "/admin/promote", client=LOCAL)[::2] == (
        409,
        {"error": "there is no live canary to promote"},
    )
    assert call(control, "POST", "/admin/rollback", client=LOCAL)[::2] == (
        409,
        {"error": "there is no canary to roll back"},
    )
    percent = orjson.dumps({"canary_percent": 0})
    assert call(control, "POST", "/admin/traffic", client=LOCAL, body=percent)[2]["canary_percent"] == 0
    five = orjson.dumps({"canary_percent": 5})
    assert call(control, "POST", "/admin/traffic", client=LOCAL, body=five)[0] == 409
    for bad in (b"{", b'{"percent": 5}', b'{"canary_percent": 101}', b'{"canary_percent": true}'):
        assert call(control, "POST", "/admin/traffic", client=LOCAL, body=bad)[0] == 400
    labels = orjson.dumps({"items": [{"request_id": "r1", "label": "yes"}, {"request_id": "r2", "label": 0}]})
    assert call(control, "POST", "/feedback", client=LOCAL, body=labels)[::2] == (200, {"accepted": 2})
    logged = [orjson.loads(line) for line in (tmp_path / "feedback.jsonl").read_bytes().splitlines()]
    assert [(r["request_id"], r["label"], r["model"]) for r in logged] == [("r1", 1, "mixed"), ("r2", 0, "mixed")]
    assert call(control, "GET", "/admin/promote", client=LOCAL)[0] == 405
    assert call(control, "GET", "/v2/health/ready", client=LOCAL)[0] == 404
    assert call(control, "POST", "/admin/other", client=LOCAL)[0] == 404


def test_inference_port_has_no_admin_and_guards_feedback(inference: InferenceApp) -> None:
    for method, path in (("POST", "/admin/promote"), ("POST", "/admin/rollback"), ("GET", "/admin/traffic")):
        assert call(inference, method, path, client=LOCAL)[0] == 404
    labels = orjson.dumps({"request_id": "r1", "label": 1})
    assert call(inference, "POST", "/feedback", client=REMOTE, body=labels)[0] == 401
    wrong = {"authorization": "Bearer nope"}
    assert call(inference, "POST", "/feedback", client=REMOTE, body=labels, headers=wrong)[0] == 403
    good = {"authorization": f"Bearer {TOKEN}"}
    assert call(inference, "POST", "/feedback", client=REMOTE, body=labels, headers=good)[::2] == (200, {"accepted": 1})
    assert call(inference, "POST", "/feedback", client=LOCAL, body=labels)[::2] == (200, {"accepted": 1})
    # Inference itself stays open to any client: the token guards control only.
    row = orjson.dumps({"instances": [[1.0, 2, True, "red"]]})
    assert call(inference, "POST", "/v1/models/mixed:predict", client=REMOTE, body=row)[0] == 200


def test_router_inference_port_has_no_admin_and_guards_feedback(tmp_path: Path) -> None:
    # No worker process: an /admin request that were forwarded would fail with 503, not 404.
    router = RouterApp(
        "m",
        {"stable": Worker("stable", "1", tmp_path / "absent.sock")},
        feedback_log=JsonLinesLog(tmp_path / "feedback.jsonl"),
        control_auth=ControlAuth(TOKEN.encode()),
    )
    for method, path in (("POST", "/admin/promote"), ("POST", "/admin/traffic"), ("GET", "/admin/traffic")):
        assert call(router, method, path, client=LOCAL)[::2] == (404, {"error": f"no route {path}"})
    labels = orjson.dumps({"request_id": "r1", "label": 1})
    assert call(router, "POST", "/feedback", client=REMOTE, body=labels)[0] == 401
    assert (
        call(router, "POST", "/feedback", client=REMOTE, body=labels, headers={"authorization": "Bearer x"})[0] == 403
    )
    good = {"authorization": f"Bearer {TOKEN}"}
    assert call(router, "POST", "/feedback", client=REMOTE, body=labels, headers=good)[::2] == (200, {"accepted": 1})
    assert call(router, "POST", "/feedback", client=LOCAL, body=labels)[0] == 200


def test_router_control_without_canary_conflicts(tmp_path: Path) -> None:
    router = RouterApp("m", {"stable": Worker("stable", "1", tmp_path / "absent.sock")})
    control = ControlApp(router, ControlAuth())
    assert call(control, "POST", "/admin/promote", client=LOCAL)[0] == 409
    assert call(control, "POST", "/admin/rollback", client=LOCAL)[0] == 409
    assert call(control, "POST", "/admin/traffic", client=LOCAL, body=b'{"canary_percent": 1}')[0] == 409
    state = call(control, "GET", "/admin/traffic", client=LOCAL)[2]
    assert state == {
        "model": "m",
        "canary_percent": 0,
        "variants": {"stable": {"version": "1", "pid": None, "alive": True}},
    }
    with pytest.raises(ConflictError, match="no live canary to promote"):
        asyncio.run(router.promote())


@pytest.mark.parametrize(
    "address", ["127.0.0.1:80", "https://127.0.0.1:8", "http://127.0.0.1", "unix://host/x.sock", "http://h:1/admin"]
)
def test_control_client_refuses_other_addresses(address: str) -> None:
    with pytest.raises(InvalidInputError, match="control address must be"):
        ControlClient(address)
