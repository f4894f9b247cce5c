"""Run the training pipeline on this machine with kfp.local's SubprocessRunner (no cluster)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from rich.console import Console

from hybridml.config import Settings
from hybridml.core import approval, data
from hybridml.core.naming import check_model_name
from hybridml.errors import HybridmlError, InvalidInputError
from hybridml.pipelines.zygote import warm_executable
from hybridml.steps import prepare, release
from hybridml.steps.runtime import RUN_LOG_ENV


class StepFailedError(HybridmlError):
    """A pipeline step failed; carries the step's own message and exit code."""

    def __init__(self, step: str, message: str, exit_code: int) -> None:
        super().__init__(f"step {step!r} failed: {message}")
        self.exit_code = exit_code


@dataclass(frozen=True)
class LocalRun:
    """Result of one local pipeline run."""

    summary: dict[str, Any]
    run_dir: Path
    seconds: float
    warmup_seconds: float
    steps: list[dict[str, Any]]


def absolute_uri(data: str) -> str:
    """Make a relative data path absolute (steps run in their own working directories)."""
    if not data or urlparse(data).scheme:
        return data  # a URI (s3://, file://, builtin:, or one the pre-flight refuses by name) stays as given
    return str(Path(data).expanduser().resolve())


def read_events(path: Path) -> list[dict[str, Any]]:
    """Progress events written by the steps (see hybridml.steps.runtime)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@contextlib.contextmanager
def root_logging_kept() -> Iterator[None]:
    """Put the root logger's handlers and level back as they were when the block ends.

    kfp.local runs a ParallelFor's iterations (the HPO workers) in threads, and each task swaps the root logger's
    handlers for one that prints to stdout and back again, without a lock. Interleaved, one task "restores" another
    task's handler, which then stays on the root logger pointing at this run's closed log file: every later log
    record in the process printed "--- Logging error ---" instead.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def _progress(events_path: Path, console: Console, done: threading.Event) -> None:
    seen = 0
    with console.status("starting pipeline…") as status:
        finished = False
        while not finished:
            finished = done.wait(0.2)  # one more pass after the run ends, for the last step's line
            events = read_events(events_path)
            for event in events[seen:]:
                if event["event"] == "end":
                    console.print(f"[green]✓[/green] {event['step']} ({event['seconds']:.1f}s)")
                elif event["event"] == "start":
                    status.update(f"{event['step']}…")
            seen = len(events)


def run(settings: Settings, arguments: dict[str, Any], *, progress: Console | None, verbose: bool = False) -> LocalRun:
    """Execute ``training_pipeline(**arguments)`` locally and return its summary.

    Raises:
        InvalidInputError: an argument is out of range or a model name breaks the naming rule (checked before
            any step runs).
        StepFailedError: a step failed; the message is the step's own one-line error.
    """
    check_model_name(arguments.get("model_name", "hybridml-model"))
    data.parse_columns(str(arguments.get("drop_columns", "")), "drop_columns")
    data.parse_columns(str(arguments.get("keep_columns", "")), "keep_columns")
    approval.check_threshold("threshold", float(arguments.get("threshold", 0.75)))
    approval.check_threshold("tolerance", float(arguments.get("tolerance", 0.01)))
    traffic = int(arguments.get("traffic_percent", 100))
    if not 1 <= traffic <= 100:
        raise InvalidInputError(f"traffic percent must be between 1 and 100, got {traffic}")
    # Its keys are checked again where the step runs; here a typo fails before training, not after it.
    release.parse_bridge(str(arguments.get("sagemaker_bridge", "")), settings)
    prepare.preflight(
        data_uri=str(arguments.get("data_uri", "")),
        target=str(arguments.get("target", "")),
        drop_columns=str(arguments.get("drop_columns", "")),
        keep_columns=str(arguments.get("keep_columns", "")),
        positive_class=str(arguments.get("positive_class", "")),
    )
    # Only now the pipeline machinery: everything above answers in well under a second on a warm CLI.
    from kfp import local

    from hybridml.pipelines.training import training_pipeline

    run_dir = settings.runs_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    events_path = run_dir / "events.jsonl"
    os.environ[RUN_LOG_ENV] = str(events_path)
    arguments = {
        **arguments,
        "tracking_uri": settings.tracking_uri,
        "experiment": settings.experiment,
        "home": str(settings.home),
    }
    local.init(
        runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(run_dir / "artifacts"), raise_on_error=True
    )

    done = threading.Event()
    painter = None
    if progress is not None:
        painter = threading.Thread(target=_progress, args=(events_path, progress, done), daemon=True)
        painter.start()
    start = time.perf_counter()
    log_path = run_dir / "pipeline.log"
    try:
        # kfp.local prints every step's logs to stdout; keep them in the run folder (--verbose shows the path).
        with (
            log_path.open("w") as log,
            contextlib.redirect_stdout(log),
            warnings.catch_warnings(),
            warm_executable(run_dir / "zygote", settings.warm_steps),
            root_logging_kept(),
        ):
            warmup = time.perf_counter() - start  # preloading the step interpreter, once per run
            # kfp.local warns that display names and the cluster image do not apply locally; both are expected.
            warnings.filterwarnings("ignore", module=r"kfp\.local\..*")
            task = training_pipeline(**arguments)
    except RuntimeError as exc:
        failure = next((e for e in reversed(read_events(events_path)) if e["event"] == "error"), None)
        if failure is None:
            raise HybridmlError(f"pipeline failed: {exc} (logs: {log_path})") from exc
        raise StepFailedError(failure["step"], failure["message"], int(failure.get("exit_code", 1))) from exc
    finally:
        done.set()
        if painter is not None:
            painter.join(timeout=2)
        os.environ.pop(RUN_LOG_ENV, None)
    seconds = time.perf_counter() - start
    summary = json.loads(task.output)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return LocalRun(
        summary=summary, run_dir=run_dir, seconds=seconds, warmup_seconds=warmup, steps=read_events(events_path)
    )
