"""End-to-end on a kind cluster: runs tests/e2e/kind.sh where Docker and kind exist, skips (with the reason) here."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("kind.sh")


def _docker_engine_up() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


@pytest.mark.skipif(
    shutil.which("kind") is None or not _docker_engine_up(),
    reason="needs a Docker engine and kind (none on this machine): run tests/e2e/kind.sh by hand",
)
def test_pipeline_on_kind() -> None:
    subprocess.run(["bash", str(SCRIPT)], check=True, timeout=3600)
