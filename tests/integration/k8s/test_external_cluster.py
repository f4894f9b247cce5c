"""The "user's cluster" mode (HYBRIDML_TEST_KUBECONFIG): the any_cluster tests run there, the rest skip, and the
namespaces the run created are deleted. The external cluster here is the test control plane started by
scripts/k8s_test_cluster.py in its own process, so this pytest only ever sees a kubeconfig."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.k8s.conftest import CRD_ROOT, REPO_ROOT, TEST_NAMESPACE_LABEL, ensure_binaries

# control_plane: it starts its own from the same binaries, so it runs last and waits for make test's build too.
pytestmark = [pytest.mark.integration, pytest.mark.control_plane]


def test_a_run_against_an_external_cluster_runs_the_any_cluster_tests_and_cleans_up(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    pytest.importorskip("kubernetes")
    if not CRD_ROOT.is_dir():
        pytest.skip(f"the shared CRDs are not at {CRD_ROOT}")
    ensure_binaries(request.config)  # waits for a build in progress, builds, or skips without Go
    from kubernetes import client, config

    log = (tmp_path / "cluster.log").open("wb")
    cluster = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "scripts" / "k8s_test_cluster.py"), "--dir", str(tmp_path / "cluster")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        kubeconfig = tmp_path / "cluster" / "kubeconfig"
        deadline = time.monotonic() + 180
        while "kubeconfig:" not in (tmp_path / "cluster.log").read_text() and time.monotonic() < deadline:
            assert cluster.poll() is None, (tmp_path / "cluster.log").read_text()
            time.sleep(0.5)
        env = {**os.environ, "HYBRIDML_TEST_KUBECONFIG": str(kubeconfig)}
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-rs",
                "tests/integration/k8s/test_control_plane.py",
            ],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert run.returncode == 0, run.stdout[-3000:]
        marked = sum(
            1
            for line in (REPO_ROOT / "tests/integration/k8s/test_control_plane.py").read_text().splitlines()
            if line.strip() == "@pytest.mark.any_cluster"
        )
        counts = dict((kind, int(n)) for n, kind in re.findall(r"(\d+) (passed|skipped)", run.stdout))
        assert counts["passed"] == marked
        assert counts["skipped"] > 0
        assert "HYBRIDML_TEST_KUBECONFIG is set: this test plays a controller" in run.stdout
        # The run removed what it created: every test namespace is gone or being deleted.
        api = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
        left = api.list_namespace(label_selector=TEST_NAMESPACE_LABEL).items
        assert left and all(ns.metadata.deletion_timestamp is not None for ns in left)
    finally:
        cluster.terminate()
        cluster.wait(timeout=30)
        log.close()
