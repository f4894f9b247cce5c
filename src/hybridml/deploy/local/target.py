"""The local target: each deployment is a detached hybridml model server process on this machine."""

from __future__ import annotations

import builtins
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hybridml.core.model import read_bundle
from hybridml.deploy.config import LocalConfig
from hybridml.deploy.contract import (
    Deployment,
    DeployTarget,
    ModelRef,
    check_rows,
    check_split_percent,
    check_traffic_percent,
)
from hybridml.deploy.fetch import Fetch, fetch_artifact
from hybridml.deploy.local.process import Processes, dial_host, free_port, port_free, tail, url_host
from hybridml.deploy.local.state import StateStore, check_version, serving_config
from hybridml.errors import ConflictError, HybridmlError, InvalidInputError, NotReadyError
from hybridml.serving import client
from hybridml.serving.cli_support import server_command
from hybridml.serving.client import is_ready
from hybridml.serving.control import ControlClient
from hybridml.serving.predictor import BundlePredictor
from hybridml.serving.storage import check_no_pickle

_SPLIT_SEED = 0
_START_POLL_S = 0.05
_CONTROL_HOST = "127.0.0.1"  # control listeners stay on loopback whatever address the inference port uses


class LocalTarget(DeployTarget):
    """Serve deployments as local ``python -m hybridml.serving`` processes, with state in ``config.state_dir``.

    Files per deployment are described in :class:`~hybridml.deploy.local.state.StateStore`; each deployed
    bundle is fetched from its reference (through ``fetch``) into the state directory and loaded there first,
    so a broken model fails before anything starts.

    ``deploy``, ``shadow`` and ``serve`` start the new server before stopping the old one, so a bad model
    never takes an endpoint down; the new server keeps the old port only if that port is free, so a
    redeploy while the old server runs moves the endpoint to a new port (read it from :meth:`status`). A
    deployment with a canary or a shadow runs the traffic router, whose split :meth:`promote`,
    :meth:`rollback` and :meth:`set_traffic` change through its control listener (loopback, port recorded
    in the state), without a restart. A server without a router, or one started by an older hybridml
    without a control listener, is restarted on the same port instead, with a gap of a few seconds.

    Args:
        config: where state lives, the listen address, start timeout, interpreter and control token file.
        fetch: how a model reference's ``artifact_uri`` becomes a local directory (default: paths,
            ``file://`` and ``s3://``; pass :func:`hybridml.deploy.fetch.mlflow_fetch` for MLflow URIs).
        clock: monotonic clock, injectable for tests.
        sleep: sleep function, injectable for tests.
    """

    target_name = "local"

    def __init__(
        self,
        config: LocalConfig,
        *,
        fetch: Fetch = fetch_artifact,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(clock=clock, sleep=sleep)
        self.config = config
        self.state_dir = config.state_dir
        self.host = config.host
        self._fetch = fetch
        self._files = StateStore(config.state_dir)
        self._processes = Processes()

    # ----- the contract -----

    def deploy(self, ref: ModelRef, traffic_percent: int = 100) -> Deployment:
        """Serve ``ref`` as the stable version (100: replaces stable, canary and shadow) or as a canary (<100).

        A canary joins the running stable version (and its shadow, if any).
        """
        name = self._files.checked_name(ref.name, new=True)
        version = check_version(ref.version)
        check_traffic_percent(traffic_percent)
        old = self._files.read(name) if self._files.exists(name) else None
        if traffic_percent < 100:
            if old is None:
                raise InvalidInputError(
                    f"cannot deploy {version!r} as a canary: {name!r} has no stable version yet (deploy it at 100%)"
                )
            _check_same_features(_served_features(old["stable"]), ref, version, "canary", old["stable"]["version"])
            _check_label_free(old, version, ref.artifact_uri, ("stable", "shadow"))
        variant = self._install(name, version, ref)
        if traffic_percent == 100:
            config: dict[str, Any] = {"stable": variant, "canary": None, "shadow": None}
        else:
            assert old is not None  # checked above
            canary = {**variant, "percent": traffic_percent}
            config = {"stable": old["stable"], "canary": canary, "shadow": old.get("shadow")}
        return self._replace(name, old, config, None)

    def set_traffic(self, name: str, percent: int) -> Deployment:
        """Give the canary ``percent`` (0-100) of new requests: through the router if one runs, else by a restart."""
        check_split_percent(percent)
        state = self._files.read(name)
        canary = state.get("canary")
        if not canary:
            raise ConflictError(f"deployment {name!r} has no canary to send traffic to")
        if self._routed(state):
            self._control(state).traffic(percent)
            self._files.write({**state, "canary": {**canary, "percent": percent}})
            return self.status(name)
        return self._restart(name, state, {**serving_config(state), "canary": {**canary, "percent": percent}})

    def shadow(self, name: str, ref: ModelRef | None) -> Deployment:
        """Add, replace (``ref``) or remove (None) the shadow; the new server starts before the old one stops.

        A shadow from another registered model is labelled ``MODEL-VERSION`` so versions stay distinct.
        """
        state = self._files.read(name)
        if ref is None:
            if not state.get("shadow"):
                raise ConflictError(f"deployment {name!r} has no shadow to remove")
            return self._replace(name, state, {**serving_config(state), "shadow": None}, None)
        label = check_version(_label(name, ref))
        stable = state["stable"]
        _check_same_features(_served_features(stable), ref, label, "shadow", stable["version"])
        _check_label_free(state, label, ref.artifact_uri, ("stable", "canary"))
        variant = self._install(name, label, ref)
        return self._replace(name, state, {**serving_config(state), "shadow": variant}, None)

    def status(self, name: str) -> Deployment:
        """State of ``name`` now: process alive, model answering ready, and the router's live split.

        The split (canary share, which versions serve) is read from the router's control listener, so a
        canary that crashed shows 0% and is named in the detail; if the listener does not answer, the
        recorded split is reported and the detail says so.
        """
        state = self._files.read(name)
        stable, canary, shadow = state["stable"], state.get("canary"), state.get("shadow")
        stable_version = stable["version"]
        canary_version = canary["version"] if canary else None
        canary_percent = canary["percent"] if canary else 0
        shadow_version = shadow["version"] if shadow else None
        pid, endpoint = state["pid"], state["endpoint"]
        notes: list[str] = []
        if not self._alive(pid):
            ready, detail = False, f"server process {pid} is not running (see {self._files.log_file(name)})"
        elif not is_ready(endpoint, name, timeout_s=1.0):
            ready, detail = False, f"server process {pid} is running but {endpoint} does not answer ready yet"
        else:
            ready = True
            if self._routed(state):
                try:
                    live = self._control(state).state()
                except HybridmlError as exc:
                    notes.append(f"recorded split shown: {exc.message}")
                else:
                    variants = live.get("variants", {})
                    canary_percent = int(live.get("canary_percent", 0))
                    stable_version = str(variants.get("stable", {}).get("version", stable_version))
                    canary_version, down = _live_variant(variants.get("canary"))
                    if down:
                        notes.append(f"canary {canary_version} is down, stable answers all requests")
                    shadow_version, down = _live_variant(variants.get("shadow"))
                    if down:
                        notes.append(f"shadow {shadow_version} is down")
            if canary_version is not None:
                detail = (
                    f"serving {stable_version} ({100 - canary_percent}%) and canary {canary_version}"
                    f" ({canary_percent}%) at {endpoint}"
                )
            else:
                detail = f"serving {stable_version} at {endpoint}"
            if shadow_version is not None:
                detail += f", shadowed by {shadow_version}"
        if notes:
            detail += f" ({'; '.join(notes)})"
        return Deployment(
            name=name,
            target=self.target_name,
            endpoint=endpoint,
            stable_version=stable_version,
            canary_version=canary_version,
            canary_percent=canary_percent,
            ready=ready,
            detail=detail,
            shadow_version=shadow_version,
        )

    def promote(self, name: str) -> Deployment:
        """Make the canary the only (stable) version: through the router if one runs, else by a restart."""
        state = self._files.read(name)
        canary = state.get("canary")
        if not canary:
            raise ConflictError(f"deployment {name!r} has no canary to promote")
        variant = {key: value for key, value in canary.items() if key != "percent"}
        if self._routed(state):
            self._control(state).promote()
            self._files.write({**state, "stable": variant, "canary": None})
            return self.status(name)
        return self._restart(name, state, {**serving_config(state), "stable": variant, "canary": None})

    def rollback(self, name: str) -> Deployment:
        """Drop the canary: through the router if one runs, else by restarting with the stable version."""
        state = self._files.read(name)
        if not state.get("canary"):
            raise ConflictError(f"deployment {name!r} has no canary to roll back")
        if self._routed(state):
            self._control(state).rollback()
            self._files.write({**state, "canary": None})
            return self.status(name)
        return self._restart(name, state, {**serving_config(state), "canary": None})

    def delete(self, name: str) -> None:
        """Terminate the server's process group and remove its state and bundle copies (the logs stay)."""
        state = self._files.read(name)
        self._stop(state["pid"])
        self._files.remove(name)

    def list(self) -> builtins.list[Deployment]:
        """Status of every deployment in the state directory, sorted by name."""
        deployments = []
        for name in self._files.names():
            try:
                self._files.checked_name(name)
            except InvalidInputError:
                continue  # a stray JSON file whose name is no deployment name
            deployments.append(self.status(name))
        return deployments

    def invoke(self, name: str, rows: Sequence[Mapping[str, Any]], protocol: str = "v2") -> builtins.list[float]:
        """Score ``rows`` with an HTTP call to the deployment's endpoint (V2 or V1 protocol)."""
        check_rows(rows, protocol)
        endpoint = self._files.read(name)["endpoint"]
        return client.predict(endpoint, name, list(rows), protocol=protocol)

    # ----- local extras -----

    def serve(
        self,
        name: str,
        stable: ModelRef,
        *,
        canary: tuple[ModelRef, int] | None = None,
        shadow: ModelRef | None = None,
        port: int | None = None,
    ) -> Deployment:
        """Start or replace endpoint ``name`` with a stable version and optional canary and shadow in one go.

        Variants from another registered model than ``name`` are labelled ``MODEL-VERSION``.

        Args:
            name: endpoint (and model) name.
            stable: the version answering the traffic the canary does not.
            canary: (version, percent in [1, 100]) answering that share of requests.
            shadow: version getting a copy of every request; its answers are only logged.
            port: port to listen on; None keeps the current port when free, else picks a free one. The
                current deployment's own port is taken over with a gap of a few seconds.

        Raises:
            InvalidInputError: bad name, version, bundle or percent; a canary or shadow whose features differ
                from stable's; two different bundles with the same version; a port that is in use.
            NotFoundError: nothing at a reference's ``artifact_uri``.
            NotReadyError: the new server did not come up (the previous deployment keeps serving).
        """
        name = self._files.checked_name(name, new=True)
        wanted: dict[str, tuple[str, ModelRef]] = {"stable": (check_version(_label(name, stable)), stable)}
        if canary is not None:
            wanted["canary"] = (check_version(_label(name, canary[0])), canary[0])
            check_traffic_percent(canary[1])
        if shadow is not None:
            wanted["shadow"] = (check_version(_label(name, shadow)), shadow)
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
            raise InvalidInputError(f"port must be an integer from 1 to 65535, got {port!r}")
        stable_label = wanted["stable"][0]
        for role, (label, ref) in wanted.items():
            if role != "stable":
                _check_same_features(stable.schema.names, ref, label, role, stable_label)
        sources: dict[str, str] = {}
        for label, ref in wanted.values():
            # Copies live under NAME/VERSION, so one version label must mean one bundle.
            if sources.setdefault(label, ref.artifact_uri) != ref.artifact_uri:
                raise InvalidInputError(f"two different bundles have version {label!r}; give them distinct versions")
        installed: dict[str, dict[str, Any]] = {}
        config: dict[str, Any] = {"stable": None, "canary": None, "shadow": None}
        for role, (label, ref) in wanted.items():
            if label not in installed:
                installed[label] = self._install(name, label, ref)
            config[role] = dict(installed[label])
        if canary is not None:
            config["canary"]["percent"] = canary[1]
        old = self._files.read(name) if self._files.exists(name) else None
        return self._replace(name, old, config, port)

    def state(self, name: str) -> dict[str, Any]:
        """The recorded state of ``name`` (pid, host, port, endpoint, control, stable/canary/shadow).

        Raises:
            NotFoundError: no deployment of that name.
        """
        return self._files.read(name)

    def payload_log(self, name: str) -> Path:
        """JSON-lines file of the requests and predictions of ``name`` (all variants)."""
        return self._files.payload_log(name)

    def feedback_log(self, name: str) -> Path:
        """JSON-lines file of the ground-truth labels posted to ``name``'s ``/feedback``."""
        return self._files.feedback_log(name)

    # ----- fetching -----

    def _install(self, name: str, label: str, ref: ModelRef) -> dict[str, Any]:
        """Fetch ``ref`` into the state directory as ``NAME/<label>``, after loading it to prove it works."""
        fresh = not self._files.exists(name)
        try:
            with self._files.scratch(name) as scratch:
                source = self._fetch(ref.artifact_uri, Path(scratch) / "bundle")
                check_no_pickle(source)
                BundlePredictor.load(source)
                fetched = read_bundle(source).schema
                if fetched.schema_hash != ref.schema.schema_hash:
                    raise InvalidInputError(
                        f"the bundle at {ref.artifact_uri} does not have the schema its reference {ref.name!r}"
                        f" version {ref.version!r} names"
                    )
                inside = Path(scratch).resolve() in source.resolve().parents
                copied = self._files.install_bundle(name, label, source, move=inside)
        except BaseException:
            if fresh:  # leave no empty folder behind for a name that was never deployed
                with contextlib.suppress(OSError):
                    (self.state_dir / name).rmdir()
            raise
        return {"version": label, "model_dir": str(copied), "artifact_uri": ref.artifact_uri}

    # ----- router control -----

    def _routed(self, state: dict[str, Any]) -> bool:
        """Whether ``state``'s server is a live traffic router whose split can change through its control listener."""
        return bool(state.get("router")) and bool(state.get("control")) and self._alive(state["pid"])

    def _control(self, state: dict[str, Any]) -> ControlClient:
        token = None
        if self.config.control_token_file:
            from hybridml.serving.auth import read_token

            raw = read_token(self.config.control_token_file, {})
            token = raw.decode() if raw is not None else None
        return ControlClient(state["control"], token)

    # ----- processes -----

    def _command(self, name: str, config: dict[str, Any], port: int, control_port: int) -> builtins.list[str]:
        stable, canary, shadow = config["stable"], config.get("canary"), config.get("shadow")
        command = server_command(
            self.config.python,
            name,
            (stable["model_dir"], stable["version"]),
            host=config.get("host") or self.host,
            port=port,
            canary=(canary["model_dir"], canary["version"], canary["percent"]) if canary else None,
            shadow=(shadow["model_dir"], shadow["version"]) if shadow else None,
            payload_log=str(self._files.payload_log(name)),
            feedback_log=str(self._files.feedback_log(name)),
            control_port=control_port,
            control_token_file=self.config.control_token_file,
            payload_log_max_bytes=self.config.payload_log_max_bytes,
            payload_log_keep=self.config.payload_log_keep,
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
            port = wanted if wanted is not None and port_free(self.host, wanted) else free_port(self.host)
        elif not port_free(self.host, port):
            raise InvalidInputError(f"port {port} on {self.host} is in use")
        state = self._start(name, config, port)
        self._files.write(state)
        if old is not None and old["pid"] != state["pid"]:
            self._stop(old["pid"])
        return self.status(name)

    def _start(self, name: str, config: dict[str, Any], port: int) -> dict[str, Any]:
        """Start a server for ``config`` and wait until it is ready; on failure kill it and raise NotReadyError."""
        host = config.get("host") or self.host
        endpoint = f"http://{url_host(dial_host(host))}:{port}"
        control_port = free_port(_CONTROL_HOST)
        while control_port == port:  # both ports were free a moment ago; they must differ
            control_port = free_port(_CONTROL_HOST)
        log_path = self._files.log_file(name)
        banner = f"starting {config['stable']['version']} on port {port}"
        process = self._processes.start(self._command(name, config, port, control_port), log_path, banner)
        deadline = self._clock() + self.config.start_timeout_s
        while True:
            if process.poll() is not None:
                raise NotReadyError(
                    f"model server for {name!r} exited with code {process.returncode} before it was ready;"
                    f" log {log_path}:\n{tail(log_path)}"
                )
            if is_ready(endpoint, name, timeout_s=1.0):
                break
            remaining = deadline - self._clock()
            if remaining <= 0:
                self._stop(process.pid)
                raise NotReadyError(
                    f"model server for {name!r} not ready after {self.config.start_timeout_s:g}s; log {log_path}:\n"
                    f"{tail(log_path)}"
                )
            self._sleep(min(_START_POLL_S, remaining))
        # Any canary or shadow makes the server a router (hybridml.serving.runtime), whose split is live.
        routed = bool(config.get("canary") or config.get("shadow"))
        return {
            "name": name,
            "pid": process.pid,
            "port": port,
            "endpoint": endpoint,
            "control": f"http://{_CONTROL_HOST}:{control_port}",
            "router": routed,
            **config,
            "host": host,
        }

    def _restart(self, name: str, state: dict[str, Any], config: dict[str, Any]) -> Deployment:
        """Replace the server of ``name`` by one for ``config`` on the same port (the port is briefly closed)."""
        self._stop(state["pid"])
        try:
            new_state = self._start(name, config, state["port"])
        except NotReadyError:
            # Bring the previous configuration back rather than leave the endpoint down.
            with contextlib.suppress(NotReadyError):
                self._files.write(self._start(name, serving_config(state), state["port"]))
            raise
        self._files.write(new_state)
        return self.status(name)

    def _alive(self, pid: int) -> bool:
        return self._processes.alive(pid)

    def _stop(self, pid: int) -> None:
        self._processes.stop(pid)


def _label(name: str, ref: ModelRef) -> str:
    """The version label of ``ref`` on endpoint ``name``: another model's version carries that model's name."""
    return str(ref.version) if ref.name == name else f"{ref.name}-{ref.version}"


def _served_features(variant: dict[str, Any]) -> builtins.list[str]:
    return read_bundle(variant["model_dir"]).schema.names


def _check_same_features(
    stable_features: builtins.list[str], ref: ModelRef, label: str, role: str, stable_label: str
) -> None:
    """Refuse a canary or shadow whose features differ from stable's: one endpoint, one request contract."""
    if ref.schema.names != stable_features:
        raise InvalidInputError(
            f"{role} {label!r} has different features than stable {stable_label!r}"
            + ("; deploy it at 100% instead" if role == "canary" else "")
        )


def _check_label_free(state: dict[str, Any], label: str, artifact_uri: str, roles: tuple[str, ...]) -> None:
    """Refuse a version label that another role of the deployment already uses for a different bundle."""
    for role in roles:
        variant = state.get(role)
        if variant and variant["version"] == label and variant.get("artifact_uri") != artifact_uri:
            raise InvalidInputError(f"two different bundles have version {label!r}; give them distinct versions")


def _live_variant(live: dict[str, Any] | None) -> tuple[str | None, bool]:
    """(version, is down) of one variant in the router's live state; (None, False) when it has none."""
    if not live:
        return None, False
    return str(live.get("version")), not live.get("alive", True)
