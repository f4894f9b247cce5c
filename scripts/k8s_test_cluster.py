"""Start the tests' Kubernetes control plane (etcd + kube-apiserver, CRDs installed) and keep it up until Ctrl-C.

    .venv/bin/python scripts/k8s_test_cluster.py [--dir DIR]

It prints the kubeconfig to use (contexts ``admin`` and ``deployer``). The same pieces start under pytest
(tests/integration/k8s/conftest.py); this is for poking at the test cluster by hand, and for running the
``any_cluster`` tests "against an external cluster" without one: HYBRIDML_TEST_KUBECONFIG=THAT_FILE pytest ...
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.k8s import conftest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="where certificates, logs and etcd's data go (default: a temp dir)")
    args = parser.parse_args()
    if not conftest.binaries_current():
        print(f"build the binaries first: make k8s-tools (they go to {conftest.bin_dir()})", file=sys.stderr)
        return 2
    work = args.dir or Path(tempfile.mkdtemp(prefix="hybridml-k8s-"))
    work.mkdir(parents=True, exist_ok=True)
    with conftest.start_control_plane(conftest.bin_dir(), work) as plane:
        print(f"kube-apiserver: {plane.server}\nkubeconfig:     {plane.kubeconfig}\nlogs:           {work}", flush=True)
        # SIGTERM stops it as Ctrl-C does: the context manager then stops both processes.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
