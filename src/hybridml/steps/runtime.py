"""What every step shares: timing, progress events and one-line error reports for the local runner."""

from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hybridml
from hybridml.errors import HybridmlError

RUN_LOG_ENV = "HYBRIDML_RUN_LOG"


def _emit(event: dict[str, Any]) -> None:
    # The CLI sets HYBRIDML_RUN_LOG for kfp.local runs to draw progress and to print the failing step's
    # message as one line; in a cluster the variable is unset and the KFP UI shows the logs instead.
    target = os.environ.get(RUN_LOG_ENV)
    if not target:
        return
    with Path(target).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(event) + "\n")


def run_step(name: str, target: str, /, **kwargs: Any) -> Any:
    """Import ``target`` (``"module:function"``) and call it, reporting start, duration and any error.

    The import happens inside the timed span so that a step's measured time is all of its own work and
    what is left of a component's wall time is the runner's overhead (benchmarks/pipeline.py relies on it).
    """
    start = time.perf_counter()
    _emit({"step": name, "event": "start", "at": time.time()})
    try:
        module_name, _, function = target.partition(":")
        fn: Callable[..., Any] = getattr(importlib.import_module(module_name), function)
        result = fn(**kwargs)
    except HybridmlError as exc:
        _emit(
            {
                "step": name,
                "event": "error",
                "kind": type(exc).__name__,
                "message": exc.message,
                "exit_code": exc.exit_code,
                "seconds": time.perf_counter() - start,
            }
        )
        raise
    except Exception as exc:
        _emit(
            {
                "step": name,
                "event": "error",
                "kind": type(exc).__name__,
                "message": f"{type(exc).__name__}: {exc}",
                "exit_code": 1,
                "seconds": time.perf_counter() - start,
            }
        )
        raise
    _emit({"step": name, "event": "end", "seconds": time.perf_counter() - start})
    return result


def code_version() -> str:
    """Package version, plus the git commit when running from a checkout (read from .git, no subprocess)."""
    root = Path(hybridml.__file__).resolve().parents[2]
    head = root / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            ref = (root / ".git" / ref[5:]).read_text().strip()
        return f"{hybridml.__version__}+g{ref[:10]}"
    except OSError:
        return hybridml.__version__


def tracking_uri_or_default(tracking_uri: str) -> str:
    """The pipeline's ``tracking_uri`` parameter, or the environment's setting when it is empty (in a cluster)."""
    if tracking_uri:
        return tracking_uri
    from hybridml.config import Settings

    return Settings.from_env().tracking_uri
