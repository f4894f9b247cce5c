"""Assemble and run a server from parsed flags: one in-process model, or a router with variant workers."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from hybridml.errors import InvalidInputError, NotReadyError
from hybridml.serving.app import Batcher, InferenceApp
from hybridml.serving.auth import TOKEN_ENV, ControlAuth, is_loopback_host, read_token
from hybridml.serving.payload_log import JsonLinesLog
from hybridml.serving.predictor import BundlePredictor
from hybridml.serving.router import CANARY, SHADOW, STABLE, RouterApp, Worker, stop_worker
from hybridml.serving.server import Listener, bind
from hybridml.serving.storage import check_no_pickle, resolve_model

log = logging.getLogger("hybridml.serving")
WORKER_START_TIMEOUT_S = 60.0


def _model_dir(args: argparse.Namespace) -> Path:
    root = Path(args.model_root) if args.model_root else None
    if args.model_uri:
        return resolve_model(args.model_uri, model_root=root, allow_pickle=args.allow_pickle)
    directory = Path(args.model_dir)
    if directory.is_dir():
        check_no_pickle(directory, allow_pickle=args.allow_pickle)
    return directory


def _payload_log(args: argparse.Namespace) -> JsonLinesLog | None:
    if not args.payload_log:
        return None
    return JsonLinesLog(args.payload_log, max_bytes=args.payload_log_max_bytes, keep=args.payload_log_keep)


def build_app(args: argparse.Namespace, model_dir: Path, auth: ControlAuth | None = None) -> InferenceApp:
    """The in-process inference app for one bundle, as configured by ``args``."""
    predictor = BundlePredictor.load(model_dir, max_rows=args.max_rows)
    batcher = None if args.no_batching else Batcher(predictor, max_wait_s=args.batch_wait_ms / 1000)
    return InferenceApp(
        args.model_name,
        args.model_version,
        predictor,
        variant=args.variant,
        registry=CollectorRegistry(),
        payload_log=_payload_log(args),
        feedback_log=JsonLinesLog(args.feedback_log) if args.feedback_log else None,
        max_body_bytes=args.max_body_bytes,
        batcher=batcher,
        control_auth=auth,
    )


@dataclass(frozen=True)
class ControlSettings:
    """The checked control flags: where the control listener goes (None: nowhere) and who may call."""

    listener: Listener | None
    auth: ControlAuth


def control_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> ControlSettings:
    """Check the control flags and read the token (file first, then ``HYBRIDML_CONTROL_TOKEN``).

    Raises:
        InvalidInputError: conflicting flags, an unreadable or empty token, or a control listener off loopback
            without a token.
    """
    if args.control_port is not None and args.control_socket is not None:
        raise InvalidInputError("give --control-port or --control-socket, not both")
    if args.control_host is not None and args.control_port is None:
        raise InvalidInputError("--control-host needs --control-port")
    if args.control_port is not None and not 0 < args.control_port < 65536:
        raise InvalidInputError(f"--control-port must be in 1-65535, got {args.control_port}")
    auth = ControlAuth(read_token(args.control_token_file, environ))
    listener = None
    if args.control_socket is not None:
        listener = Listener(socket_path=args.control_socket)
    elif args.control_port is not None:
        host = args.control_host or "127.0.0.1"
        if auth.token is None and not is_loopback_host(host):
            raise InvalidInputError(
                f"refusing to listen for control on {host}: off loopback the control listener needs a token"
                f" (--control-token-file or {TOKEN_ENV})"
            )
        listener = Listener(host=host, port=args.control_port)
    return ControlSettings(listener, auth)


def run_server(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> None:
    """Serve as ``args`` say; returns when the server is stopped.

    Args:
        args: the parsed flags (:func:`hybridml.serving.__main__.build_parser`).
        environ: the environment, read here once (for ``HYBRIDML_CONTROL_TOKEN``); None: empty.

    Raises:
        InvalidInputError: a bad flag combination, model location or bundle, or a control address in use.
        NotReadyError: a worker process did not start.
    """
    from hybridml.serving.server import run

    if args.canary_percent and not args.canary_dir:
        raise InvalidInputError("a canary percent needs a canary model directory (--canary-dir)")
    if not 0 <= args.canary_percent <= 100:
        raise InvalidInputError(f"canary percent must be in [0, 100], got {args.canary_percent}")
    if args.worker_socket:
        from hybridml.serving.worker import run_worker

        run_worker(build_app(args, _model_dir(args)), args.worker_socket)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = control_settings(args, environ or {})
    # Bound before any model is loaded or worker started: a taken control address fails at once.
    control_socket = bind(settings.listener) if settings.listener is not None else None
    try:
        _serve(args, settings, control_socket, run)
    finally:
        if control_socket is not None:
            control_socket.close()
            if settings.listener is not None and settings.listener.socket_path is not None:
                Path(settings.listener.socket_path).unlink(missing_ok=True)


def _serve(args: argparse.Namespace, settings: ControlSettings, control_socket: socket.socket | None, run: Any) -> None:
    from hybridml.serving.control import ControlApp, SingleVariant

    model_dir = _model_dir(args)
    _announce(args, settings)
    local_socket = settings.listener is not None and settings.listener.socket_path is not None
    if not args.canary_dir and not args.shadow_dir:
        # One variant: serve it in this process, no router hop.
        # Unbatched requests never wait; see server.run for why they get the standard event loop.
        app = build_app(args, model_dir, settings.auth)
        control = None
        if control_socket is not None:
            control = (
                ControlApp(SingleVariant(app, os.getpid()), settings.auth, local_socket=local_socket),
                control_socket,
            )
        loop = "asyncio" if args.no_batching else "uvloop"
        run(app, host=args.bind_host, port=args.bind_port, loop=loop, control=control)
        return
    router, workers = start_router(args, model_dir, settings.auth)
    try:
        control = None
        if control_socket is not None:
            control = (ControlApp(router, settings.auth, local_socket=local_socket), control_socket)
        run(router, host=args.bind_host, port=args.bind_port, lifespan="on", control=control)
    finally:
        for worker in workers.values():
            stop_worker(worker)


def _announce(args: argparse.Namespace, settings: ControlSettings) -> None:
    """Say where control is; and, for an inference port open beyond loopback without a token, that it stays local."""
    if settings.listener is not None:
        log.info("control listener on %s", settings.listener.describe())
    if settings.auth.token is None and not is_loopback_host(args.bind_host):
        log.warning(
            "inference port %s:%d is open beyond loopback and no control token is set: control stays on loopback"
            " (/feedback on this port answers loopback callers only; set --control-token-file or %s to allow others)",
            args.bind_host, args.bind_port, TOKEN_ENV,
        )  # fmt: skip


def _check_same_features(stable_dir: Path, other_dir: Path, what: str) -> None:
    from hybridml.core.model import read_bundle

    stable, other = read_bundle(stable_dir).schema, read_bundle(other_dir).schema
    if stable.names != other.names:
        # One endpoint, one request contract: a client cannot know which variant will answer.
        raise InvalidInputError(
            f"{what} {other_dir} has features {other.names[:5]}..., which differ from the stable model's"
            f" {stable.names[:5]}..."
        )


def start_router(
    args: argparse.Namespace, model_dir: Path, auth: ControlAuth | None = None
) -> tuple[RouterApp, dict[str, Worker]]:
    """Start one worker process per variant and the router app in front of them."""
    from hybridml.core.model import read_bundle

    variants = {STABLE: (model_dir, args.model_version)}
    if args.canary_dir:
        _check_same_features(model_dir, Path(args.canary_dir), "canary")
        variants[CANARY] = (Path(args.canary_dir), args.canary_version)
    if args.shadow_dir:
        _check_same_features(model_dir, Path(args.shadow_dir), "shadow")
        variants[SHADOW] = (Path(args.shadow_dir), args.shadow_version)
    sockets = Path(tempfile.mkdtemp(prefix="hybridml-workers-"))
    workers: dict[str, Worker] = {}
    for variant, (directory, version) in variants.items():
        socket_path = sockets / f"{variant}.sock"
        command = [
            sys.executable, "-m", "hybridml.serving", "--worker-socket", str(socket_path),
            "--model-dir", str(directory), "--model-name", args.model_name, "--model-version", version,
            "--variant", variant, "--max-rows", str(args.max_rows), "--max-body-bytes", str(args.max_body_bytes),
            "--batch-wait-ms", str(args.batch_wait_ms),
        ]  # fmt: skip
        if args.no_batching:
            command.append("--no-batching")
        if args.allow_pickle:
            command.append("--allow-pickle")
        if args.payload_log:
            command += ["--payload-log", args.payload_log, "--payload-log-max-bytes", str(args.payload_log_max_bytes),
                        "--payload-log-keep", str(args.payload_log_keep)]  # fmt: skip
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        workers[variant] = Worker(variant, version, socket_path, process)
    try:
        _wait_for_sockets(workers)
    except NotReadyError:
        for worker in workers.values():
            stop_worker(worker)
        raise
    router = RouterApp(
        args.model_name,
        workers,
        canary_percent=args.canary_percent,
        registry=CollectorRegistry(),
        feedback_log=JsonLinesLog(args.feedback_log) if args.feedback_log else None,
        classes=read_bundle(model_dir).schema.classes,
        max_body_bytes=args.max_body_bytes,
        seed=args.split_seed,
        control_auth=auth,
    )
    return router, workers


def _wait_for_sockets(workers: dict[str, Worker]) -> None:
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    pending = dict(workers)
    while pending:
        for variant, worker in list(pending.items()):
            assert worker.process is not None
            if worker.process.poll() is not None:
                raise NotReadyError(f"{variant} worker exited with code {worker.process.returncode} while starting")
            if worker.socket_path.exists():
                del pending[variant]
        if time.monotonic() > deadline:
            raise NotReadyError(f"workers {sorted(pending)} not ready after {WORKER_START_TIMEOUT_S:g}s")
        time.sleep(0.01)
