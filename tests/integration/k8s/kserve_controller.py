"""KServe's own controller (cmd/manager, built by scripts/build_kserve.sh) against the test control plane.

The module-scoped fixture ``kserve_controller`` (exported through conftest.py) starts it in Standard mode with
its webhooks served on loopback over generated certificates; docs/kserve-controller.md says what runs and why.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.k8s.conftest import (
    SESSION,
    ControlPlane,
    _get,
    _stop,
    _wait,
    _write_certificates,
    bin_dir,
    free_port,
    install_crds,
    make_namespace,
)

# Namespaces labelled so are the ones KServe's webhooks (configured by the fixture) are called for.
KSERVE_WEBHOOK_LABEL = "hybridml.dev/kserve-webhooks"
_CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1


@dataclass(frozen=True)
class KServeController:
    """KServe's manager running against the test control plane.

    Attributes:
        namespace: KServe's own namespace (its ``POD_NAMESPACE``), holding ``inferenceservice-config``.
        webhook_port: where the API server reaches its webhooks (https://127.0.0.1:PORT).
        log: the manager's log.
    """

    namespace: str
    webhook_port: int
    log: Path

    def enroll(self, plane: ControlPlane, namespace: str) -> None:
        """Label ``namespace`` so that KServe's webhooks (defaulting, validation, pod mutation) apply in it."""
        from kubernetes import client

        body = {"metadata": {"labels": {KSERVE_WEBHOOK_LABEL: SESSION}}}
        client.CoreV1Api(plane.api_client()).patch_namespace(namespace, body)


class _NetnsRelay:
    """TCP relays between this process's network namespace and a child's (both sides on 127.0.0.1).

    KServe's manager binds its webhook server on every interface (it has no flag for the address), so it runs in
    a network namespace of its own, which has nothing but loopback. One thread of this process joins that
    namespace (``setns`` is per thread) and only creates sockets there; the relays copy bytes both ways.
    """

    def __init__(self, pid: int) -> None:
        self._fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        self._inside = ThreadPoolExecutor(max_workers=1, initializer=self._enter)
        self._listeners: list[socket.socket] = []

    def _enter(self) -> None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(self._fd, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns into the manager's network namespace")

    def socket_inside(self) -> socket.socket:
        return self._inside.submit(socket.socket).result()

    def loopback_up(self) -> None:
        """Bring the namespace's ``lo`` up (a new network namespace starts with it down)."""
        import fcntl
        import struct

        def up() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                request = struct.pack("16sh22x", b"lo", 0)
                flags = struct.unpack("16sh22x", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
                fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | _IFF_UP))

        self._inside.submit(up).result()

    def forward(self, port: int, *, listen_inside: bool) -> None:
        """Listen on 127.0.0.1:``port`` on one side; connect each client to 127.0.0.1:``port`` on the other."""

        listener = self.socket_inside() if listen_inside else socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        self._listeners.append(listener)

        def pump(source: socket.socket, sink: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := source.recv(65536):
                    sink.sendall(data)
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

        def serve(client_side: socket.socket) -> None:
            upstream = socket.socket() if listen_inside else self.socket_inside()
            with client_side, upstream:
                try:
                    upstream.connect(("127.0.0.1", port))
                except OSError:
                    return  # not listening (yet): the client sees the connection closed
                back = threading.Thread(target=pump, args=(upstream, client_side), daemon=True)
                back.start()
                pump(client_side, upstream)
                back.join()

        def accept() -> None:
            with contextlib.suppress(OSError):  # closed by close()
                while True:
                    connection, _ = listener.accept()
                    threading.Thread(target=serve, args=(connection,), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()

    def close(self) -> None:
        for listener in self._listeners:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        self._inside.shutdown(wait=True)
        os.close(self._fd)


def _kserve_config(namespace: str) -> dict[str, str]:
    """``inferenceservice-config``: Standard (RawDeployment) mode, no Istio, Gateway API, Ingress or Knative."""
    resources = {"memoryRequest": "100Mi", "memoryLimit": "1Gi", "cpuRequest": "100m", "cpuLimit": "1"}
    return {
        "deploy": json.dumps({"defaultDeploymentMode": "Standard"}),
        "ingress": json.dumps(
            {
                # Required by KServe even when unused (no Istio here); nothing is created for it.
                "ingressGateway": f"{namespace}/unused-gateway",
                "ingressDomain": "example.com",
                "disableIstioVirtualHost": True,
                "disableIngressCreation": True,
            }
        ),
        # Parsed on every reconcile or pod mutation (resources must be quantities); no image is pulled here.
        **{
            key: json.dumps({"image": f"kserve/{image}:v0.20.0", **resources})
            for key, image in (
                ("storageInitializer", "storage-initializer"),
                ("logger", "agent"),
                ("batcher", "agent"),
                ("agent", "agent"),
            )
        },
    }


def _kserve_webhooks(ca_bundle: str, port: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Mutating and validating configurations for KServe's webhooks at https://127.0.0.1:``port``.

    The paths and rules are those KServe's manager registers; only enrolled namespaces are covered, so the rest
    of the session (other modules' objects, after the manager stops) never calls a webhook that is gone.
    """

    def hook(name: str, path: str, group: str, version: str, resource: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": f"{name}.kserve-webhook-server.hybridml.dev",
            "clientConfig": {"url": f"https://127.0.0.1:{port}{path}", "caBundle": ca_bundle},
            "rules": [
                {
                    "apiGroups": [group],
                    "apiVersions": [version],
                    "operations": ["CREATE", "UPDATE"] if resource != "pods" else ["CREATE"],
                    "resources": [resource],
                }
            ],
            "namespaceSelector": {"matchLabels": {KSERVE_WEBHOOK_LABEL: SESSION}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1", "v1beta1"],
            "timeoutSeconds": 10,
            **extra,
        }

    isvc = ("serving.kserve.io", "v1beta1", "inferenceservices")
    pods_only = {
        "objectSelector": {"matchExpressions": [{"key": "serving.kserve.io/inferenceservice", "operator": "Exists"}]}
    }
    mutating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": f"hybridml-test-kserve-{SESSION}"},
        "webhooks": [
            hook("inferenceservice-defaulter", "/mutate-serving-kserve-io-v1beta1-inferenceservice", *isvc),
            hook("pod-mutator", "/mutate-pods", "", "v1", "pods", **pods_only),
        ],
    }
    validating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": f"hybridml-test-kserve-{SESSION}"},
        "webhooks": [
            hook("inferenceservice-validator", "/validate-serving-kserve-io-v1beta1-inferenceservice", *isvc),
            hook(
                "servingruntime-validator",
                "/validate-serving-kserve-io-v1alpha1-servingruntime",
                "serving.kserve.io",
                "v1alpha1",
                "servingruntimes",
            ),
            hook(
                "inferencegraph-validator",
                "/validate-serving-kserve-io-v1alpha1-inferencegraph",
                "serving.kserve.io",
                "v1alpha1",
                "inferencegraphs",
            ),
        ],
    }
    return mutating, validating


def _storage_container() -> dict[str, Any]:
    """A ClusterStorageContainer for ``s3://`` whose storage initializer meets the ``restricted`` Pod Security profile.

    KServe's built-in storage initializer sets no securityContext, so Pod Security ``restricted`` refuses its pods;
    a ClusterStorageContainer's container is merged into the init container KServe injects.
    """
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterStorageContainer",
        "metadata": {"name": f"hybridml-test-s3-{SESSION}"},
        "spec": {
            "supportedUriFormats": [{"prefix": "s3://"}],
            "container": {
                "name": "storage-initializer",
                "image": "kserve/storage-initializer:v0.20.0",
                "resources": {"requests": {"cpu": "100m", "memory": "100Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                    "runAsNonRoot": True,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
            },
        },
    }


@pytest.fixture(scope="module")
def kserve_controller(control_plane: ControlPlane) -> Iterator[KServeController]:
    """KServe's manager (``cmd/manager``, Standard mode) against ``control_plane``, its webhooks registered.

    Skips when the binary is not built (``scripts/build_kserve.sh``) or this process cannot give the manager a
    network namespace of its own (root and ``unshare`` are needed: see :class:`_NetnsRelay`). The webhooks are
    served with a certificate the fixture generates and are called by the API server through the relay.
    While it runs, KServe reconciles every InferenceService of the cluster; its webhooks only cover namespaces
    passed to :meth:`KServeController.enroll`.
    """
    import base64
    from urllib.parse import urlsplit

    from kubernetes import client

    binary, crd_dir = bin_dir() / "kserve-manager", bin_dir() / "kserve-crds"
    if not (os.access(binary, os.X_OK) and crd_dir.is_dir()):
        pytest.skip(f"{binary} is not built (scripts/build_kserve.sh)")
    if control_plane.external is not None:
        pytest.skip("KServe's controller is started only on the tests' own control plane")
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        pytest.skip("KServe's manager needs its own network namespace (it binds all interfaces): root and unshare")

    work = control_plane.log_dir / "kserve"
    certs = work / "tmp" / "k8s-webhook-server" / "serving-certs"  # controller-runtime's default under TMPDIR
    certs.mkdir(parents=True)
    ca_file, cert_file, key_file = _write_certificates(work)
    (certs / "tls.crt").write_bytes(cert_file.read_bytes())
    (certs / "tls.key").write_bytes(key_file.read_bytes())
    ca_bundle = base64.b64encode(ca_file.read_bytes()).decode()

    # The CRDs the manager watches beyond ../shared/crds/ (TrainedModel, ClusterStorageContainer), from its module.
    extensions = client.ApiextensionsV1Api(control_plane.api_client())
    listed = extensions.list_custom_resource_definition(_preload_content=False)
    present = {item["metadata"]["name"] for item in json.loads(listed.data)["items"]}
    extra = [doc for path in sorted(crd_dir.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]
    install_crds(control_plane, [crd for crd in extra if crd["metadata"]["name"] not in present])
    custom = client.CustomObjectsApi(control_plane.api_client())
    storage = _storage_container()
    custom.create_cluster_custom_object("serving.kserve.io", "v1alpha1", "clusterstoragecontainers", storage)
    core = client.CoreV1Api(control_plane.api_client())
    admission = client.AdmissionregistrationV1Api(control_plane.api_client())
    namespace = make_namespace(control_plane, "baseline", prefix="kserve")
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="inferenceservice-config"), data=_kserve_config(namespace)
        ),
    )

    api_port, webhook_port, probe_port = urlsplit(control_plane.server).port, free_port(), free_port()
    assert api_port is not None
    log = work / "kserve-manager.log"
    flags = [
        f"--kubeconfig={control_plane.kubeconfig}",
        "--metrics-addr=0",
        f"--health-probe-addr=127.0.0.1:{probe_port}",
        f"--webhook-port={webhook_port}",
        "--leader-elect=false",
    ]
    with log.open("wb") as out:
        # The manager waits on stdin until the relay to the API server listens inside its namespace.
        process = subprocess.Popen(
            [unshare, "--net", "--", "sh", "-c", 'read -r _ && exec "$0" "$@"', str(binary), *flags],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "POD_NAMESPACE": namespace, "TMPDIR": str(work / "tmp")},
        )
    relay: _NetnsRelay | None = None
    mutating, validating = _kserve_webhooks(ca_bundle, webhook_port)
    try:
        own = os.readlink("/proc/self/ns/net")
        _wait("unshare --net", lambda: os.readlink(f"/proc/{process.pid}/ns/net") != own, process, log)
        relay = _NetnsRelay(process.pid)
        relay.loopback_up()
        relay.forward(api_port, listen_inside=True)
        relay.forward(webhook_port, listen_inside=False)
        assert process.stdin is not None
        process.stdin.write(b"go\n")
        process.stdin.close()
        context = ssl.create_default_context(cafile=str(ca_file))
        # Any HTTP answer over TLS with the generated certificate: the webhook server is up.
        _wait("kserve-manager", lambda: _get(f"https://127.0.0.1:{webhook_port}/", "", context)[0] > 0, process, log)
        admission.create_mutating_webhook_configuration(mutating)
        admission.create_validating_webhook_configuration(validating)
        yield KServeController(namespace, webhook_port, log)
    finally:
        for delete in (
            admission.delete_mutating_webhook_configuration,
            admission.delete_validating_webhook_configuration,
        ):
            with contextlib.suppress(client.ApiException):
                delete(f"hybridml-test-kserve-{SESSION}")
        with contextlib.suppress(client.ApiException):
            custom.delete_cluster_custom_object(
                "serving.kserve.io", "v1alpha1", "clusterstoragecontainers", storage["metadata"]["name"]
            )
        _stop(process)
        if relay is not None:
            relay.close()
