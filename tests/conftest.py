"""Test tiers follow the folder: tests/unit, tests/integration, tests/cli, tests/e2e."""

from __future__ import annotations

import pytest

TIERS = ("unit", "integration", "cli", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.relative_to(config.rootpath).parts
        if len(parts) > 1 and parts[0] == "tests" and parts[1] in TIERS:
            item.add_marker(getattr(pytest.mark, parts[1]))
