"""A hybridml home shared by the pipeline tests: one direct-branch run, reused by the later cases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

HYBRIDML = Path(sys.executable).with_name("hybridml")
DAEMON_ENV = {"HYBRIDML_DAEMON": "1", "HYBRIDML_DAEMON_IDLE_S": "120"}


@dataclass
class Cli:
    """Runs `hybridml --home HOME ...` as a user would."""

    home: Path

    def __call__(
        self, *args: str, timeout: float = 300, extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYBRIDML_"))}
        # As a user's shell would: commands go to this home's background process (stopped at teardown).
        env.update(DAEMON_ENV)
        env.update(extra_env or {})
        return subprocess.run(
            [str(HYBRIDML), "--home", str(self.home), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )

    def json(self, *args: str) -> object:
        result = self(*args, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


@pytest.fixture(scope="package")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    runner = Cli(tmp_path_factory.mktemp("home"))
    yield runner
    for deployment in json.loads(runner("endpoints", "list", "--json").stdout or "[]"):
        runner("endpoints", "delete", deployment["name"])
    runner("daemon", "stop")


@pytest.fixture(scope="package")
def first_run(cli: Cli) -> dict[str, object]:
    result = cli("run", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]
