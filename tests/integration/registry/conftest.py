"""Registry backends for the tests: a direct SQLite URI, an MLflow server on SQLite and one on PostgreSQL.

The servers are slow to start (tens of seconds of imports and migrations on two cores), so all of them are
launched in the background when the first registry test starts and awaited only by the tests that use them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pytest

from hybridml.core.data import builtin_breast_cancer, encode_features, encode_labels, infer_schema
from hybridml.core.model import Bundle, fit, save_bundle

PG_BIN = Path("/usr/lib/postgresql/15/bin")
MLFLOW = Path(sys.executable).with_name("mlflow")
START_TIMEOUT_S = 150.0
# The server's job runner is a separate process we do not need; without it the server starts faster.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Backend:
    """One registry backend: its tracking URI and an experiment whose runs the tests log models to."""

    kind: str
    uri: str
    artifact_location: str | None = None
    _experiment_id: str | None = field(default=None, repr=False)

    def new_run(self) -> str:
        client = mlflow.MlflowClient(self.uri)
        if self._experiment_id is None:
            existing = client.get_experiment_by_name("registry-tests")
            self._experiment_id = (
                existing.experiment_id
                if existing is not None
                else client.create_experiment("registry-tests", artifact_location=self.artifact_location)
            )
        return str(client.create_run(self._experiment_id).info.run_id)


class Service:
    """A process started in its own session, so stopping it also stops whatever it spawned."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None
        self.log: Path | None = None

    def start(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True
            )

    def tail(self) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, 15)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait(timeout=5)


def wait_healthy(url: str, service: Service, deadline: float) -> None:
    while time.monotonic() < deadline:
        if service.process is not None and service.process.poll() is not None:
            raise RuntimeError(f"{service.name} exited with {service.process.returncode}:\n{service.tail()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{service.name} did not become healthy within {START_TIMEOUT_S:.0f} s:\n{service.tail()}")


def start_mlflow_server(name: str, store_uri: str, root: Path, services: list[Service]) -> str:
    port = free_port()
    service = Service(name)
    services.append(service)
    service.start(
        [
            str(MLFLOW),
            "server",
            "--backend-store-uri",
            store_uri,
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        root / f"{name}.log",
        SERVER_ENV,
    )
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, service, time.monotonic() + START_TIMEOUT_S)
    return url


def as_postgres(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the ``postgres`` user when we are root."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def start_postgres(services: list[Service]) -> tuple[str, Callable[[], None]]:
    """A throw-away PostgreSQL cluster on a free loopback port; returns its SQLAlchemy URI and a stopper."""
    # Not under pytest's tmp dir: that one is private to root and the server runs as 'postgres'.
    root = Path(tempfile.mkdtemp(prefix="hybridml-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    port = free_port()
    subprocess.run(
        as_postgres(
            [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"]
        ),
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
    subprocess.run(
        as_postgres(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(root / "postgres.log"),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )

    def stop() -> None:
        subprocess.run(
            as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]), capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)

    try:
        subprocess.run(
            as_postgres([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow"]),
            check=True,
            capture_output=True,
        )
    except BaseException:
        stop()
        raise
    # psycopg2 named explicitly: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which is not installed.
    return f"postgresql+psycopg2://postgres@127.0.0.1:{port}/mlflow", stop


class Launcher:
    """Starts every server backend in a background thread and hands each out when it is ready."""

    def __init__(self, root: Path, template_db: Path) -> None:
        self.root = root
        self.template_db = template_db
        self.services: list[Service] = []
        self.stoppers: list[Callable[[], None]] = []
        self.results: dict[str, Backend | str] = {}  # kind -> Backend, or a skip/failure reason
        self.threads: dict[str, threading.Thread] = {}

    def launch(self, kind: str, start: Callable[[], Backend]) -> None:
        def run() -> None:
            try:
                self.results[kind] = start()
            except _Skip as exc:
                self.results[kind] = f"skip: {exc}"
            except Exception as exc:
                self.results[kind] = f"{type(exc).__name__}: {exc}"

        thread = threading.Thread(target=run, name=f"start-{kind}", daemon=True)
        self.threads[kind] = thread
        thread.start()

    def get(self, kind: str) -> Backend:
        if kind not in self.threads:  # not foreseen at session start (e.g. a test selected by name)
            self.launch(kind, getattr(self, kind.replace("-", "_")))
        self.threads[kind].join(START_TIMEOUT_S + 60)
        result = self.results.get(kind, f"{kind} did not start in time")
        if isinstance(result, str):
            if result.startswith("skip:"):
                pytest.skip(result.removeprefix("skip:").strip())
            pytest.fail(f"backend {kind} failed to start: {result}")
        return result

    def http_sqlite(self) -> Backend:
        root = self.root / "http-sqlite"
        root.mkdir()
        # A copy of an already-migrated empty database spares the server a few seconds of schema migrations.
        shutil.copyfile(self.template_db, root / "mlflow.db")
        url = start_mlflow_server("mlflow-sqlite", f"sqlite:///{root / 'mlflow.db'}", root, self.services)
        return Backend("http-sqlite", url)

    def http_disposable(self) -> Backend:
        """A server on SQLite that one test may stop (never shared with the contract suite)."""
        root = self.root / "http-disposable"
        root.mkdir()
        shutil.copyfile(self.template_db, root / "mlflow.db")
        url = start_mlflow_server("mlflow-disposable", f"sqlite:///{root / 'mlflow.db'}", root, self.services)
        return Backend("http-disposable", url)

    def service(self, name: str) -> Service:
        """The started service called ``name``."""
        return next(s for s in self.services if s.name == name)

    def http_postgres(self) -> Backend:
        if not (PG_BIN / "initdb").is_file():
            print(f"PostgreSQL tests skipped: {PG_BIN}/initdb is missing (apt-get install postgresql-15)")
            raise _Skip(f"PostgreSQL binaries not found in {PG_BIN}")
        store_uri, stop = start_postgres(self.services)
        self.stoppers.append(stop)
        root = self.root / "http-postgres"
        root.mkdir()
        url = start_mlflow_server("mlflow-postgres", store_uri, root, self.services)
        return Backend("http-postgres", url)

    def stop(self) -> None:
        for service in self.services:
            service.stop()
        for stopper in self.stoppers:
            stopper()


class _Skip(Exception):  # noqa: N818 - carries a skip reason, not an error
    pass


@pytest.fixture(scope="session")
def _launcher(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    root = tmp_path_factory.mktemp("registry-backends")
    template = root / "template.db"
    launcher = Launcher(root, template)
    wanted = {name for item in request.session.items for name in getattr(item, "fixturenames", ())}
    if {"backend", "http_backend"} & wanted:
        launcher.launch("http-postgres", launcher.http_postgres)  # first: it has the longest way to go
    mlflow.MlflowClient(f"sqlite:///{template}").search_experiments()  # creates and migrates the schema
    if {"backend", "http_backend"} & wanted:
        launcher.launch("http-sqlite", launcher.http_sqlite)
    if "disposable_server" in wanted:
        launcher.launch("http-disposable", launcher.http_disposable)
    try:
        yield launcher
    finally:
        launcher.stop()


@pytest.fixture(scope="session")
def sqlite_backend(_launcher: Launcher) -> Backend:
    root = _launcher.root / "sqlite"
    root.mkdir()
    shutil.copyfile(_launcher.template_db, root / "mlflow.db")
    return Backend("sqlite", f"sqlite:///{root / 'mlflow.db'}", artifact_location=str(root / "artifacts"))


BACKENDS = ("sqlite", "http-sqlite", "http-postgres")


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest, _launcher: Launcher, sqlite_backend: Backend) -> Backend:
    """Each of the three backends in turn (tests that use it run once per backend)."""
    if request.param == "sqlite":
        return sqlite_backend
    return _launcher.get(request.param)


@pytest.fixture(scope="session")
def http_backend(_launcher: Launcher) -> Backend:
    """The MLflow server on SQLite, for tests that need only one server backend."""
    return _launcher.get("http-sqlite")


@dataclass(frozen=True)
class Disposable:
    backend: Backend
    service: Service


@pytest.fixture(scope="session")
def disposable_server(_launcher: Launcher) -> Disposable:
    """An MLflow server on SQLite of its own, for the one test that stops it."""
    return Disposable(_launcher.get("http-disposable"), _launcher.service("mlflow-disposable"))


@dataclass(frozen=True)
class Trained:
    bundle: Bundle
    X: np.ndarray
    scores: np.ndarray


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A tiny XGBoost bundle on the built-in breast-cancer table, and its scores on that table."""
    frame, target = builtin_breast_cancer()
    schema = infer_schema(frame, target)
    X, y = encode_features(frame, schema), encode_labels(frame, schema)
    params = {"n_estimators": 10, "max_depth": 3}
    model = fit("xgboost", params, X, y)
    bundle = save_bundle(model, "xgboost", params, schema, tmp_path_factory.mktemp("bundle") / "xgb")
    return Trained(bundle=bundle, X=X, scores=np.asarray(model.predict_proba(X))[:, 1])


@pytest.fixture
def model_name() -> str:
    """A fresh registered-model name per test, so tests sharing a backend never see each other's versions."""
    return f"m-{uuid.uuid4().hex[:10]}"
