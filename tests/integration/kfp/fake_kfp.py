"""A small KFP v2beta1 REST API on 127.0.0.1: the endpoints kfp.Client 2.17 calls to upload, run and schedule.

It keeps pipelines, versions, experiments, runs and recurring runs in memory and records every request (method,
path, query, headers, body), so tests assert what a client sent. Payloads follow kfp_server_api's V2beta1 models.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

PREFIX = "/apis/v2beta1"


@dataclass
class Request:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    def upload(self) -> tuple[str, bytes]:
        """The multipart ``uploadfile`` part: (file name, content)."""
        head = f"Content-Type: {self.headers['content-type']}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + self.body)
        for part in message.iter_parts():
            if part.get_param("name", header="content-disposition") == "uploadfile":
                return str(part.get_filename()), part.get_payload(decode=True)
        raise AssertionError("no uploadfile part")


@dataclass
class State:
    """What the server holds, and the requests it received."""

    requests: list[Request] = field(default_factory=list)
    pipelines: list[dict[str, Any]] = field(default_factory=list)
    versions: list[dict[str, Any]] = field(default_factory=list)
    experiments: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    recurring: list[dict[str, Any]] = field(default_factory=list)
    multi_user: bool = False
    ids: Any = field(default_factory=lambda: itertools.count(1))

    def new_id(self, kind: str) -> str:
        return f"{kind}-{next(self.ids)}"


def _name_matches(items: list[dict[str, Any]], filter_json: str | None) -> list[dict[str, Any]]:
    if not filter_json:
        return items
    predicates = json.loads(filter_json)["predicates"]
    for predicate in predicates:
        assert predicate["key"] == "display_name" and predicate["operation"] in (1, "EQUALS"), predicate
        items = [i for i in items if i["display_name"] == predicate["stringValue"]]
    return items


class _Handler(BaseHTTPRequestHandler):
    state: State

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _record(self) -> Request:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(self.command, url.path, query, {k.lower(): v for k, v in self.headers.items()}, body)
        self.state.requests.append(request)
        return request

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        request = self._record()
        state, path = self.state, request.path
        if path == f"{PREFIX}/healthz":
            return self._send(200, {"multi_user": state.multi_user})
        if path == f"{PREFIX}/pipelines":
            found = _name_matches(state.pipelines, request.query.get("filter"))
            return self._send(200, {"pipelines": found, "total_size": len(found)} if found else {})
        if path.startswith(f"{PREFIX}/pipelines/") and path.endswith("/versions"):
            pipeline_id = path.split("/")[-2]
            mine = [v for v in state.versions if v["pipeline_id"] == pipeline_id]
            found = _name_matches(mine, request.query.get("filter"))
            found = found[: int(request.query.get("page_size") or 10)]
            return self._send(200, {"pipeline_versions": found} if found else {})
        if path == f"{PREFIX}/experiments":
            mine = [e for e in state.experiments if e["namespace"] == request.query.get("namespace", "")]
            found = _name_matches(mine, request.query.get("filter"))
            return self._send(200, {"experiments": found} if found else {})
        return self._send(404, {"error": f"no route {path}", "message": f"no route {path}"})

    def do_POST(self) -> None:
        request = self._record()
        state, path = self.state, request.path
        if path == f"{PREFIX}/pipelines/upload":
            name = request.query["name"]
            if _name_matches(state.pipelines, json.dumps({"predicates": [_eq(name)]})):
                return self._send(409, {"message": f"pipeline {name} exists"})
            pipeline = {"pipeline_id": state.new_id("pipeline"), "display_name": name}
            pipeline["namespace"] = request.query.get("namespace", "")
            state.pipelines.append(pipeline)
            state.versions.append(
                {
                    "pipeline_id": pipeline["pipeline_id"],
                    "pipeline_version_id": state.new_id("version"),
                    "display_name": name,
                }
            )
            return self._send(200, pipeline)
        if path == f"{PREFIX}/pipelines/upload_version":
            version = {
                "pipeline_id": request.query["pipelineid"],
                "pipeline_version_id": state.new_id("version"),
                "display_name": request.query["name"],
            }
            state.versions.append(version)
            return self._send(200, version)
        if path == f"{PREFIX}/experiments":
            body = request.json()
            experiment = {
                "experiment_id": state.new_id("experiment"),
                "display_name": body["display_name"],
                "namespace": body.get("namespace") or "",
            }
            state.experiments.append(experiment)
            return self._send(200, experiment)
        if path == f"{PREFIX}/runs":
            run = {**request.json(), "run_id": state.new_id("run"), "state": "PENDING"}
            state.runs.append(run)
            return self._send(200, run)
        if path == f"{PREFIX}/recurringruns":
            job = {**request.json(), "recurring_run_id": state.new_id("recurring"), "status": "ENABLED"}
            state.recurring.append(job)
            return self._send(200, job)
        return self._send(404, {"message": f"no route {path}"})


def _eq(name: str) -> dict[str, Any]:
    return {"operation": 1, "key": "display_name", "stringValue": name}


class FakeKfp:
    """The server, started on a free loopback port; ``url`` is what ``--host`` takes."""

    def __init__(self) -> None:
        self.state = State()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def reset(self) -> None:
        """Forget everything (the tests share one server)."""
        fresh = State()
        for name in ("requests", "pipelines", "versions", "experiments", "runs", "recurring", "ids"):
            setattr(self.state, name, getattr(fresh, name))
        self.state.multi_user = False

    def calls(self) -> list[tuple[str, str]]:
        """(method, path) of every request, in order."""
        return [(r.method, r.path) for r in self.state.requests]

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
