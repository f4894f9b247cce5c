"""Test tiers follow the folder: tests/unit, tests/integration, tests/cli, tests/e2e."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TIERS = ("unit", "integration", "cli", "e2e", "mutation")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.relative_to(config.rootpath).parts
        if len(parts) > 1 and parts[0] == "tests" and parts[1] in TIERS:
            item.add_marker(getattr(pytest.mark, parts[1]))
    # The tests on the Kubernetes control plane run last: `make test` builds its Go tools in the background
    # meanwhile, and on a cold machine that build is the longest part of the run.
    items.sort(key=needs_control_plane)


def needs_control_plane(item: pytest.Item) -> bool:
    """Whether the test uses the Kubernetes control plane (its fixture, or the marker where it asks at run time)."""
    return "control_plane" in getattr(item, "fixturenames", ()) or item.get_closest_marker("control_plane") is not None


def _root_handlers() -> list[logging.Handler]:
    """The root logger's handlers, less pytest's own (it swaps those around every phase of a test)."""
    return [h for h in logging.getLogger().handlers if not type(h).__module__.startswith("_pytest")]


@pytest.fixture(autouse=True)
def _environment_restored() -> Iterator[None]:
    """Undo what a test's in-process CLI call wrote into os.environ (it sets HYBRIDML_HOME for its steps).

    Without this, a later test that starts the real `hybridml` inherits another test's home and starts a
    background process for it that outlives the run.
    """
    saved, executable, handlers = dict(os.environ), sys.executable, _root_handlers()
    yield
    os.environ.clear()
    os.environ.update(saved)
    # A local run points sys.executable at its step launcher while it runs; one left behind made every later
    # test start its servers next to a deleted launcher. A handler left on the root logger outlives the stream it
    # writes to (a run's log file, a CLI runner's buffer): every later record then printed "--- Logging error ---"
    # into another test's output. Put both back, and fail the test that left them.
    leaked, sys.executable = sys.executable, executable
    leaked_handlers = [h for h in _root_handlers() if h not in handlers]
    for handler in leaked_handlers:
        logging.getLogger().removeHandler(handler)
    assert not leaked_handlers, f"the test left handlers on the root logger: {leaked_handlers}"
    assert leaked == executable, f"the test left sys.executable at {leaked} (was {executable})"


@pytest.fixture(scope="session", autouse=True)
def _no_stray_mlflow_store(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the run if anything created MLflow's default store in the working directory.

    MLflow 3 falls back to ``sqlite:///mlflow.db`` (and ``./mlruns``) in the current directory when a client
    has no tracking URI; every hybridml code path must pass its own. A stray store once got committed.
    """
    root = Path(request.config.rootpath)
    strays = ("mlflow.db", "mlruns")
    before = {name for name in strays if (root / name).exists()}
    yield
    created = sorted(name for name in strays if (root / name).exists() and name not in before)
    assert not created, f"a test or code path wrote MLflow's default store into {root}: {created}"


@pytest.fixture(scope="session", autouse=True)
def _no_background_process_left(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fail the run if a `hybridml` background process for a test's home outlives the tests (and stop it)."""
    yield
    base = str(tmp_path_factory.getbasetemp())
    left = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"hybridml.daemon" in args and any(a.decode(errors="replace").startswith(base) for a in args):
            pid = int(cmdline.parent.name)
            left.append(pid)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
    assert not left, f"tests left hybridml background processes running (stopped now): {left}"
