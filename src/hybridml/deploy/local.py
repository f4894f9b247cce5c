"""Local deployment target: each endpoint is a detached KServe model server process on the loopback interface."""

from __future__ import annotations

import builtins
import contextlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hybridml.core.model import read_bundle
from hybridml.deploy.base import Deployment, DeployTarget, check_traffic_percent
from hybridml.errors import ConflictError, InvalidInputError, NotFoundError, NotReadyError
from hybridml.serving.cli_support import server_command
from hybridml.serving.client import is_ready
from hybridml.serving.predictor import BundlePredictor

# Names become file names and URL path segments, so only these characters (the Kubernetes target maps them on).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_STOP_GRACE_S = 10.0
_SPLIT_SEED = 0
_LOG_TAIL_CHARS = 2000


class LocalTarget(DeployTarget):
    """Serve deployments as local ``python -m hybridml.serving`` processes, with state in ``state_dir``.

    Per deployment ``NAME``: ``NAME.json`` (pid, host, port, endpoint, stable/canary/shadow config),
    ``NAME.log`` (server output), ``NAME.payload.jsonl`` (every scored request, shadow copies included),
    ``NAME.feedback.jsonl`` (ground-truth labels posted to ``/feedback``) and ``NAME/<version>/`` (a copy of
    each deployed bundle, so cleaning up MLflow artifacts cannot pull a model away from under a running
    server). The logs are kept after delete.

    ``deploy`` and ``serve`` start the new server before stopping the old one, so a bad model never takes an
    endpoint down; the new server keeps the old port only if that port is free, so a redeploy while the old
    server runs moves the endpoint to a new port (read it from :meth:`status`). A deployment with a canary or
    a shadow runs the traffic router, whose split :meth:`promote`, :meth:`rollback` and :meth:`set_traffic`
    change through its admin routes, without a restart. A server without a router (one started by an older
    hybridml) is restarted on the same port instead, with a gap of a few seconds. One caller at a time per
    state_dir.

    Args:
        state_dir: directory holding state, logs and bundle copies (created if needed).
        host: address new servers listen on.
        python: interpreter that runs the servers (needs hybridml installed).
        start_timeout_s: how long a new server may take to become ready.
        clock: monotonic clock, injectable for tests.
        sleep: sleep function, injectable for tests.
    """

    target_name = "local"

    def __init__(
        self,
        state_dir: Path | str,
        host: str = "127.0.0.1",
        python: str = sys.executable,
        *,
        start_timeout_s: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(clock=clock, sleep=sleep)
        self.state_dir = Path(state_dir)
        self.host = host
        self.python = python
        self.start_timeout_s = start_timeout_s
        # Popen objects of servers started here, so exited ones are reaped instead of lingering as zombies.
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # ----- public contract -----

    def deploy(self, name: str, version: str | int, model_dir: Path | str, traffic_percent: int = 100) -> Deployment:
        """Serve ``model_dir`` as ``version`` of ``name``: as the stable version (100) or as a canary (<100).

        At 100 the new version replaces stable, canary and shadow. As a canary it joins the running stable
        version (and its shadow, if any). The bundle is loaded here first, so a broken one fails fast without
        starting anything.
        """
        _check_name(name)
        version = _check_version(version)
        check_traffic_percent(traffic_percent)
        BundlePredictor.load(model_dir)
        old = self._read_state(name) if self._state_file(name).is_file() else None
        if traffic_percent < 100:
            if old is None:
                raise InvalidInputError(
                    f"cannot deploy {version!r} as a canary: {name!r} has no stable version yet (deploy it at 100%)"
                )
            _check_same_features(old["stable"], Path(model_dir), version, "canary")
        copied = self._copy_bundle(name, version, Path(model_dir))
        new_variant = {"version": version, "model_dir": str(copied)}
        if traffic_percent == 100:
            config: dict[str, Any] = {"stable": new_variant, "canary": None, "shadow": None}
        else:
            assert old is not None  # checked above
            canary = {**new_variant, "percent": traffic_percent}
            config = {"stable": old["stable"], "canary": canary, "shadow": old.get("shadow")}
        return self._replace(name, old, config, None)

    def serve(
        self,
        name: str,
        stable: tuple[str | int, Path | str],
        *,
        canary: tuple[str | int, Path | str, int] | None = None,
        shadow: tuple[str | int, Path | str] | None = None,
        port: int | None = None,
    ) -> Deployment:
        """Start or replace endpoint ``name`` with a stable version and optional canary and shadow in one go.

        Args:
            name: endpoint (and model) name.
            stable: (version, bundle directory) answering the traffic the canary does not.
            canary: (version, bundle directory, percent in [1, 100]) answering that share of requests.
            shadow: (version, bundle directory) getting a copy of every request; its answers are only logged.
            port: port to listen on; None keeps the current port when free, else picks a free one. The
                current deployment's own port is taken over with a gap of a few seconds.

        Raises:
            InvalidInputError: bad name, version, bundle or percent; a canary or shadow whose features differ
                from stable's; two different bundles with the same version; a port that is in use.
            NotReadyError: the new server did not come up (the previous deployment keeps serving).
        """
        _check_name(name)
        wanted: dict[str, tuple[str, Path]] = {"stable": (_check_version(stable[0]), Path(stable[1]))}
        if canary is not None:
            wanted["canary"] = (_check_version(canary[0]), Path(canary[1]))
            check_traffic_percent(canary[2])
        if shadow is not None:
            wanted["shadow"] = (_check_version(shadow[0]), Path(shadow[1]))
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
            raise InvalidInputError(f"port must be an integer from 1 to 65535, got {port!r}")
        for role, (version, directory) in wanted.items():
            BundlePredictor.load(directory)
            if role != "stable":
                _check_same_features(
                    {"version": wanted["stable"][0], "model_dir": str(wanted["stable"][1])}, directory, version, role
                )
        sources: dict[str, Path] = {}
        for version, directory in wanted.values():
            # Copies live under NAME/VERSION, so one version label must mean one bundle.
            if sources.setdefault(version, directory.resolve()) != directory.resolve():
                raise InvalidInputError(f"two different bundles have version {version!r}; give them distinct versions")
        config: dict[str, Any] = {"stable": None, "canary": None, "shadow": None}
        for role, (version, directory) in wanted.items():
            config[role] = {"version": version, "model_dir": str(self._copy_bundle(name, version, directory))}
        if canary is not None:
            config["canary"]["percent"] = canary[2]
        old = self._read_state(name) if self._state_file(name).is_file() else None
        return self._replace(name, old, config, port)

    def status(self, name: str) -> Deployment:
        """State of ``name`` now: process alive and model answering ready."""
        state = self._read_state(name)
        canary, shadow = state.get("canary"), state.get("shadow")
        pid, endpoint = state["pid"], state["endpoint"]
        if not self._alive(pid):
            ready, detail = False, f"server process {pid} is not running (see {self._log_file(name)})"
        elif not is_ready(endpoint, name, timeout_s=1.0):
            ready, detail = False, f"server process {pid} is running but {endpoint} does not answer ready yet"
        else:
            ready = True
            stable = state["stable"]["version"]
            if canary:
                detail = (
                    f"serving {stable} ({100 - canary['percent']}%) and canary {canary['version']}"
                    f" ({canary['percent']}%) at {endpoint}"
                )
            else:
                detail = f"serving {stable} at {endpoint}"
            if shadow:
                detail += f", shadowed by {shadow['version']}"
        return Deployment(
            name=name,
            target=self.target_name,
            endpoint=endpoint,
            stable_version=state["stable"]["version"],
            canary_version=canary["version"] if canary else None,
            canary_percent=canary["percent"] if canary else 0,
            ready=ready,
            detail=detail,
        )

    def state(self, name: str) -> dict[str, Any]:
        """The recorded state of ``name`` (pid, host, port, endpoint, stable/canary/shadow, log paths).

        Raises:
            NotFoundError: no deployment of that name.
        """
        return self._read_state(name)

    def payload_log(self, name: str) -> Path:
        """JSON-lines file of the requests and predictions of ``name`` (all variants)."""
        return self.state_dir / f"{name}.payload.jsonl"

    def feedback_log(self, name: str) -> Path:
        """JSON-lines file of the ground-truth labels posted to ``name``'s ``/feedback``."""
        return self.state_dir / f"{name}.feedback.jsonl"

    def promote(self, name: str) -> Deployment:
        """Make the canary the only (stable) version: through the router if one runs, else by a restart."""
        state = self._read_state(name)
        canary = state.get("canary")
        if not canary:
            raise ConflictError(f"deployment {name!r} has no canary to promote")
        variant = {"version": canary["version"], "model_dir": canary["model_dir"]}
        if self._routed(state):
            self._admin(state, action="promote")
            self._write_state({**state, "stable": variant, "canary": None})
            return self.status(name)
        return self._restart(name, state, {**_config(state), "stable": variant, "canary": None})

    def rollback(self, name: str) -> Deployment:
        """Drop the canary: through the router if one runs, else by restarting with the stable version."""
        state = self._read_state(name)
        if not state.get("canary"):
            raise ConflictError(f"deployment {name!r} has no canary to roll back")
        if self._routed(state):
            self._admin(state, action="rollback")
            self._write_state({**state, "canary": None})
            return self.status(name)
        return self._restart(name, state, {**_config(state), "canary": None})

    def set_traffic(self, name: str, percent: int) -> Deployment:
        """Give the canary ``percent`` (0-100) of new requests: through the router if one runs, else by a restart.

        Raises:
            InvalidInputError: ``percent`` is not an integer in [0, 100].
            NotFoundError: no deployment of that name.
            ConflictError: it has no canary.
        """
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise InvalidInputError(f"traffic percent must be an integer from 0 to 100, got {percent!r}")
        state = self._read_state(name)
        canary = state.get("canary")
        if not canary:
            raise ConflictError(f"deployment {name!r} has no canary to send traffic to")
        if self._routed(state):
            self._admin(state, percent=percent)
            self._write_state({**state, "canary": {**canary, "percent": percent}})
            return self.status(name)
        return self._restart(name, state, {**_config(state), "canary": {**canary, "percent": percent}})

    def delete(self, name: str) -> None:
        """Terminate the server's process group and remove its state and bundle copies (the logs stay)."""
        state = self._read_state(name)
        self._stop(state["pid"])
        self._state_file(name).unlink()
        shutil.rmtree(self.state_dir / name, ignore_errors=True)

    def list(self) -> builtins.list[Deployment]:
        """Status of every deployment in ``state_dir``, sorted by name."""
        if not self.state_dir.is_dir():
            return []
        return [self.status(path.stem) for path in sorted(self.state_dir.glob("*.json"))]

    # ----- router -----

    def _routed(self, state: dict[str, Any]) -> bool:
        """Whether ``state``'s server is a live traffic router whose split can change in place."""
        return bool(state.get("router")) and self._alive(state["pid"])

    def _admin(self, state: dict[str, Any], *, action: str | None = None, percent: int | None = None) -> None:
        from hybridml.serving.cli_support import set_traffic

        set_traffic(state["endpoint"], canary_percent=percent, action=action)

    # ----- processes -----

    def _command(self, name: str, config: dict[str, Any], port: int) -> builtins.list[str]:
        stable, canary, shadow = config["stable"], config.get("canary"), config.get("shadow")
        command = server_command(
            self.python,
            name,
            (stable["model_dir"], stable["version"]),
            host=config.get("host") or self.host,
            port=port,
            canary=(canary["model_dir"], canary["version"], canary["percent"]) if canary else None,
            shadow=(shadow["model_dir"], shadow["version"]) if shadow else None,
            payload_log=str(self.payload_log(name)),
            feedback_log=str(self.feedback_log(name)),
        )
        if canary:
            command += ["--split-seed", str(_SPLIT_SEED)]
        return command

    def _replace(self, name: str, old: dict[str, Any] | None, config: dict[str, Any], port: int | None) -> Deployment:
        """Serve ``config`` instead of ``old``: start the new server first, then stop the old one."""
        config = {**config, "host": self.host}
        if port is not None and old is not None and old["port"] == port and self._alive(old["pid"]):
            return self._restart(name, old, config)  # the old server holds the wanted port: hand it over
        if port is None:
            wanted = old["port"] if old is not None else None
            port = wanted if wanted is not None and _port_free(self.host, wanted) else _free_port(self.host)
        elif not _port_free(self.host, port):
            raise InvalidInputError(f"port {port} on {self.host} is in use")
        state = self._start(name, config, port)
        self._write_state(state)
        if old is not None and old["pid"] != state["pid"]:
            self._stop(old["pid"])
        return self.status(name)

    def _start(self, name: str, config: dict[str, Any], port: int) -> dict[str, Any]:
        """Start a server for ``config`` and wait until it is ready; on failure kill it and raise NotReadyError."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log_path = self._log_file(name)
        host = config.get("host") or self.host
        endpoint = f"http://{_url_host(_dial_host(host))}:{port}"
        with log_path.open("ab") as log:
            log.write(f"\n=== starting {config['stable']['version']} on port {port} ===\n".encode())
            log.flush()
            process = subprocess.Popen(
                self._command(name, config, port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: outlives the caller, and delete() can end it whole
                close_fds=True,
            )
        self._children[process.pid] = process
        deadline = self._clock() + self.start_timeout_s
        while True:
            if process.poll() is not None:
                raise NotReadyError(
                    f"model server for {name!r} exited with code {process.returncode} before it was ready;"
                    f" log {log_path}:\n{_tail(log_path)}"
                )
            if is_ready(endpoint, name, timeout_s=1.0):
                break
            if self._clock() > deadline:
                self._stop(process.pid)
                raise NotReadyError(
                    f"model server for {name!r} not ready after {self.start_timeout_s:g}s; log {log_path}:\n"
                    f"{_tail(log_path)}"
                )
            self._sleep(0.05)
        # Any canary or shadow makes the server a router (hybridml.serving.runtime), whose split is live.
        routed = bool(config.get("canary") or config.get("shadow"))
        state = {"name": name, "pid": process.pid, "port": port, "endpoint": endpoint, "router": routed, **config}
        return {**state, "host": host}

    def _restart(self, name: str, state: dict[str, Any], config: dict[str, Any]) -> Deployment:
        """Replace the server of ``name`` by one for ``config`` on the same port (the port is briefly closed)."""
        self._stop(state["pid"])
        try:
            new_state = self._start(name, config, state["port"])
        except NotReadyError:
            # Bring the previous configuration back rather than leave the endpoint down.
            previous = _config(state)
            with contextlib.suppress(NotReadyError):
                self._write_state(self._start(name, previous, state["port"]))
            raise
        self._write_state(new_state)
        return self.status(name)

    def _alive(self, pid: int) -> bool:
        child = self._children.get(pid)
        if child is not None:
            return child.poll() is None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # exists, owned by someone else
        return _is_our_server(pid)

    def _stop(self, pid: int) -> None:
        """SIGTERM the server's process group, then SIGKILL it if it has not exited within the grace period."""
        if not self._alive(pid):
            self._children.pop(pid, None)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        if not self._wait_gone(pid, _STOP_GRACE_S):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            self._wait_gone(pid, _STOP_GRACE_S)
        self._children.pop(pid, None)

    def _wait_gone(self, pid: int, timeout_s: float) -> bool:
        child = self._children.get(pid)
        if child is not None:
            try:
                child.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self._alive(pid):
                return True
            time.sleep(0.05)
        return False

    # ----- files -----

    def _state_file(self, name: str) -> Path:
        return self.state_dir / f"{name}.json"

    def _log_file(self, name: str) -> Path:
        return self.state_dir / f"{name}.log"

    def _read_state(self, name: str) -> dict[str, Any]:
        _check_name(name)
        path = self._state_file(name)
        if not path.is_file():
            raise NotFoundError(f"no local deployment named {name!r} (in {self.state_dir})")
        try:
            state: dict[str, Any] = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"deployment state {path} is corrupt: {exc}") from exc
        return state

    def _write_state(self, state: dict[str, Any]) -> None:
        path = self._state_file(state["name"])
        # Write then rename, so a reader never sees half a file.
        with tempfile.NamedTemporaryFile("w", dir=self.state_dir, suffix=".tmp", delete=False) as tmp:
            json.dump(state, tmp, indent=2, sort_keys=True)
        os.replace(tmp.name, path)

    def _copy_bundle(self, name: str, version: str, source: Path) -> Path:
        destination = self.state_dir / name / version
        destination.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{version}-"))
        shutil.copytree(source, staging, dirs_exist_ok=True)
        # A running server has its model in memory, so replacing the files of a re-deployed version is safe.
        if destination.exists():
            shutil.rmtree(destination)
        staging.rename(destination)
        return destination.resolve()


def _config(state: dict[str, Any]) -> dict[str, Any]:
    """The serving configuration (variants and host) recorded in a deployment's state."""
    return {key: state.get(key) for key in ("stable", "canary", "shadow", "host")}


def _check_same_features(stable: dict[str, Any], other_dir: Path, version: str, role: str) -> None:
    """Refuse a canary or shadow whose features differ from stable's: one endpoint, one request contract."""
    stable_names = read_bundle(stable["model_dir"]).schema.names
    if read_bundle(other_dir).schema.names != stable_names:
        raise InvalidInputError(
            f"{role} {version!r} has different features than stable {stable['version']!r}"
            + ("; deploy it at 100% instead" if role == "canary" else "")
        )


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInputError(
            f"invalid deployment name {name!r}: use letters, digits, '.', '_' and '-' (at most 63, not starting with"
            " a symbol)"
        )


def _check_version(version: str | int) -> str:
    text = str(version) if isinstance(version, int) and not isinstance(version, bool) else version
    if not isinstance(text, str) or not _VERSION.match(text):
        raise InvalidInputError(f"invalid version {version!r}: use letters, digits, '.', '_' and '-'")
    return text


def _dial_host(host: str) -> str:
    """The address a client connects to for a server listening on ``host``: loopback for a wildcard address."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host or "127.0.0.1"  # a host name, or empty (all interfaces)
    if address.is_unspecified:
        return "::1" if address.version == 6 else "127.0.0.1"
    return host


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Same option uvicorn sets, so a port in TIME_WAIT after a stop still counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def _is_our_server(pid: int) -> bool:
    """Whether ``pid`` runs hybridml.serving; guards against signalling a process that reused a stale pid."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    try:
        return b"hybridml.serving" in cmdline.read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no procfs (macOS): trust the pid
    except OSError:
        return False


def _tail(path: Path) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return text[-_LOG_TAIL_CHARS:]
