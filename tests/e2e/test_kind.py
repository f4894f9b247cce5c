"""End to end on a kind cluster: runs tests/e2e/kind.sh where Docker and kind exist, skips (with the reason) here.

The script itself is checked everywhere: bash parses it, shellcheck passes on it (where installed), and it agrees
with the cluster config and the manifests it applies.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
SCRIPT = HERE / "kind.sh"
CONFIG = HERE / "kind-config.yaml"


def _docker_engine_up() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


def _default(name: str) -> str:
    found = re.search(rf"^{name}=\$\{{{name}:-([^}}]+)\}}", SCRIPT.read_text(), re.M)
    assert found, name
    return found.group(1)


@pytest.mark.e2e
@pytest.mark.skipif(
    shutil.which("kind") is None or not _docker_engine_up(),
    reason="needs a Docker engine and kind (none on this machine): run tests/e2e/kind.sh by hand",
)
def test_pipeline_on_kind() -> None:
    subprocess.run(["bash", str(SCRIPT)], check=True, timeout=5400)


def test_the_script_parses() -> None:
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(
    shutil.which("shellcheck") is None, reason="shellcheck is not installed (apt-get install shellcheck)"
)
def test_shellcheck_passes() -> None:
    result = subprocess.run(["shellcheck", "-x", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_the_script_agrees_with_the_cluster_config_and_the_manifests() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    assert config["kind"] == "Cluster" and config["name"] == _default("CLUSTER")
    assert config["networking"]["apiServerAddress"] == "127.0.0.1"
    images = {node["image"] for node in config["nodes"]}
    assert len(images) == 1 and re.fullmatch(r"kindest/node:v\d+\.\d+\.\d+", images.pop())
    text = SCRIPT.read_text()
    assert "CONFIG=tests/e2e/kind-config.yaml" in text and '--config "$CONFIG"' in text
    # Every install is pinned to a release, never a moving branch.
    for name, pattern in (
        ("CERT_MANAGER_VERSION", r"v\d+\.\d+\.\d+"),
        ("KSERVE_VERSION", r"v\d+\.\d+\.\d+"),
        ("KFP_VERSION", r"\d+\.\d+\.\d+"),
    ):
        assert re.fullmatch(pattern, _default(name)), name
    overlay = ROOT / "manifests" / "overlays" / "kind" / "kustomization.yaml"
    assert "kubectl apply -k manifests/overlays/kind" in text and overlay.is_file()
    # The predictor image the script builds and loads is the one the kind overlay names.
    kustomize = yaml.safe_load(overlay.read_text())
    named = {f"{i['newName']}:{i['newTag']}" for i in kustomize["images"] if i["name"] == "ghcr.io/hybridml/predictor"}
    assert named == {_default("PREDICTOR_IMAGE")}
    # The pipeline image is the one the committed pipeline runs.
    compiled = (ROOT / "src" / "hybridml" / "pipelines" / "hybridml_training.yaml").read_text()
    assert set(re.findall(r"image: (\S+)", compiled)) == {_default("PIPELINE_IMAGE")}
    assert '"$HYBRIDML" submit --host' in text
