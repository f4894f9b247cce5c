"""One PostgreSQL from Debian for the HPO tests (the cluster's Optuna storage)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.registry.conftest import Service, start_postgres


@pytest.fixture(scope="package")
def postgres_uri() -> Iterator[str]:
    services: list[Service] = []
    uri, stop = start_postgres(services)
    try:
        yield uri
    finally:
        stop()
