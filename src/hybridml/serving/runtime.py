"""Assemble and run a server from parsed flags: one in-process model, or a router with variant workers."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from hybridml.errors import InvalidInputError, NotReadyError
from hybridml.serving.app import Batcher, InferenceApp
from hybridml.serving.payload_log import JsonLinesLog
from hybridml.serving.predictor import BundlePredictor
from hybridml.serving.router import CANARY, SHADOW, STABLE, RouterApp, Worker, stop_worker
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


def build_app(args: argparse.Namespace, model_dir: Path) -> InferenceApp:
    """The in-process inference app for one bundle, as configured by ``args``."""
    predictor = BundlePredictor.load(model_dir, max_rows=args.max_rows)
    batcher = None if args.no_batching else Batcher(predictor, max_wait_s=args.batch_wait_ms / 1000)
    return InferenceApp(
        args.model_name,
        args.model_version,
        predictor,
        variant=args.variant,
        registry=CollectorRegistry(),
        payload_log=JsonLinesLog(args.payload_log) if args.payload_log else None,
        feedback_log=JsonLinesLog(args.feedback_log) if args.feedback_log else None,
        max_body_bytes=args.max_body_bytes,
        batcher=batcher,
    )


def run_server(args: argparse.Namespace) -> None:
    """Serve as ``args`` say; returns when the server is stopped.

    Raises:
        InvalidInputError: a bad flag combination, model location or bundle.
        NotReadyError: a worker process did not start.
    """
    from hybridml.serving.server import run

    if args.canary_percent and not args.canary_dir:
        raise InvalidInputError("a canary percent needs a canary model directory (--canary-dir)")
    if not 0 <= args.canary_percent <= 100:
        raise InvalidInputError(f"canary percent must be in [0, 100], got {args.canary_percent}")
    model_dir = _model_dir(args)
    if args.worker_socket:
        from hybridml.serving.worker import run_worker

        run_worker(build_app(args, model_dir), args.worker_socket)
        return
    if not args.canary_dir and not args.shadow_dir:
        # One variant: serve it in this process, no router hop.
        # Unbatched requests never wait; see server.run for why they get the standard event loop.
        app = build_app(args, model_dir)
        run(app, host=args.bind_host, port=args.bind_port, loop="asyncio" if args.no_batching else "uvloop")
        return
    router, workers = start_router(args, model_dir)
    try:
        run(router, host=args.bind_host, port=args.bind_port, lifespan="on")
    finally:
        for worker in workers.values():
            stop_worker(worker)


def _check_same_features(stable_dir: Path, other_dir: Path, what: str) -> None:
    from hybridml.core.model import read_bundle

    stable, other = read_bundle(stable_dir).schema, read_bundle(other_dir).schema
    if stable.names != other.names:
        # One endpoint, one request contract: a client cannot know which variant will answer.
        raise InvalidInputError(
            f"{what} {other_dir} has features {other.names[:5]}..., which differ from the stable model's"
            f" {stable.names[:5]}..."
        )


def start_router(args: argparse.Namespace, model_dir: Path) -> tuple[RouterApp, dict[str, Worker]]:
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
            command += ["--payload-log", args.payload_log]
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
