"""Test tiers follow the folder: tests/unit, tests/integration, tests/cli, tests/e2e."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

TIERS = ("unit", "integration", "cli", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.relative_to(config.rootpath).parts
        if len(parts) > 1 and parts[0] == "tests" and parts[1] in TIERS:
            item.add_marker(getattr(pytest.mark, parts[1]))


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
