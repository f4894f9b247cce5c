"""A real Kubernetes control plane for tests: etcd and kube-apiserver built from Go modules, started on 127.0.0.1.

The binaries come from ``scripts/build_k8s.sh`` (pinned in ``tools/k8s/go.mod``) into ``.tools/k8s/`` (or
``HYBRIDML_K8S_BIN``). When they are missing or stale and Go is installed, the first test builds them (minutes
on a cold machine: the build gets its own long timeout); without Go and without binaries the tests skip.

One session fixture, ``control_plane``, starts etcd (loopback only, plain HTTP, no TLS needed on loopback) and
kube-apiserver (TLS with a generated CA, a static token file with an admin and a deployer token, RBAC, the
PodSecurity admission plugin on top of the defaults, service-account signing keys), waits for ``/readyz``,
writes a kubeconfig, installs the KServe and Prometheus Operator CRDs from ``../shared/crds/`` and waits until
each is Established, then stops both processes at the end. With that alone nothing reconciles, nothing is
scheduled and no container runs, so tests play the controllers they need (the ``default`` ServiceAccount of a
namespace, an InferenceService's status).

Optional, module-scoped, each skipping when its binary is not built (``K8S_COMPONENTS="kube-controller-manager
kube-scheduler kwok" scripts/build_k8s.sh``): ``controller_manager`` (Deployments become ReplicaSets and Pods,
namespaces get their ``default`` ServiceAccount), ``scheduler`` and ``kwok_node`` (a fake Node whose Pods kwok
marks Running and Ready; no container ever runs). ``kserve_controller`` runs KServe's own manager (built by
``scripts/build_kserve.sh``) with its webhooks registered; see docs/kserve-controller.md.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import needs_control_plane

REPO_ROOT = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build_k8s.sh"
BUILD_LOCK = ".build.lock"  # held by `make go-tools` while it builds (Makefile)
CRD_ROOT = REPO_ROOT.parent / "shared" / "crds"
CRD_DIRS = ("kserve", "monitoring")
# A cold build downloads the Kubernetes module graph and compiles kube-apiserver on whatever cores are free.
BUILD_TIMEOUT_S = int(os.environ.get("HYBRIDML_K8S_BUILD_TIMEOUT", "3600"))
START_TIMEOUT_S = 180.0
SERVICE_CIDR = "10.0.0.0/24"
ISSUER = "https://kubernetes.default.svc.cluster.local"
EXTERNAL_ENV = "HYBRIDML_TEST_KUBECONFIG"
# Every namespace a test creates carries this label, so a run against an external cluster can remove its own.
TEST_NAMESPACE_LABEL = "hybridml.dev/test-namespace"
SESSION = secrets.token_hex(4)


def bin_dir() -> Path:
    """Where the control-plane binaries live (``HYBRIDML_K8S_BIN`` or ``.tools/k8s``)."""
    return Path(os.environ.get("HYBRIDML_K8S_BIN", REPO_ROOT / ".tools" / "k8s"))


def _build_env() -> dict[str, str]:
    return {**os.environ, "K8S_BIN": str(bin_dir())}


def wait_for_background_build(config: pytest.Config) -> None:
    """Wait while ``make test``'s background build holds the build lock (``$K8S_BIN/.build.lock``).

    ``make test`` builds the Go tools beside the rest of the suite, under that lock; the tests that need them
    run last (tests/conftest.py) and wait here for what is left of the build instead of starting a second one.
    """
    lock = bin_dir() / BUILD_LOCK
    if not lock.exists():
        return
    with lock.open("rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            started = time.monotonic()
            with config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
                print(f"\nwaiting for the Go tools' build that holds {lock} (its log: build/go-tools.log)")
                fcntl.flock(handle, fcntl.LOCK_SH)
                print(f"the build finished after {time.monotonic() - started:.0f}s more")


def binaries_current() -> bool:
    """True when etcd and kube-apiserver are built from the pinned go.mod (the script's own check)."""
    if shutil.which("go") is None:
        return all(os.access(bin_dir() / name, os.X_OK) for name in ("etcd", "kube-apiserver"))
    check = subprocess.run([str(BUILD_SCRIPT), "check"], env=_build_env(), capture_output=True, check=False)
    return check.returncode == 0


def external_kubeconfig() -> Path | None:
    """The kubeconfig of a cluster the tests should use instead of starting their own (``HYBRIDML_TEST_KUBECONFIG``).

    Deliberately not ``KUBECONFIG``: a developer's everyday cluster is never a test bed by accident.
    """
    value = os.environ.get(EXTERNAL_ENV, "")
    return Path(value) if value else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Against an external cluster, skip what needs the tests' own control plane; else give the build's timeout.

    On a cluster of the user's, only tests marked ``any_cluster`` run: the others play KServe's controller or
    kubelet, or use the static tokens and processes that only the tests' own control plane has.
    """
    if external_kubeconfig() is not None:
        reason = (
            f"{EXTERNAL_ENV} is set: this test plays a controller or uses the test control plane's own tokens and"
            " processes, so it runs only on the control plane the tests start"
        )
        for item in items:
            if needs_control_plane(item) and item.get_closest_marker("any_cluster") is None:
                item.add_marker(pytest.mark.skip(reason=reason))
        return
    here = Path(__file__).parent
    # The first test to need the control plane may wait for a cold build, whichever folder it is in.
    mine = [item for item in items if here in item.path.parents or needs_control_plane(item)]
    if mine and not binaries_current():
        for item in mine:
            item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT_S))


def ensure_binaries(config: pytest.Config) -> Path:
    """Build the binaries if needed (printing how long it took), or skip when there is no Go to build them."""
    directory = bin_dir()
    wait_for_background_build(config)
    if shutil.which("go") is None:
        if all(os.access(directory / name, os.X_OK) for name in ("etcd", "kube-apiserver")):
            return directory
        pytest.skip(
            f"Go is not installed and {directory} has no etcd/kube-apiserver (scripts/build_k8s.sh builds them)"
        )
    if binaries_current():
        return directory
    capture = config.pluginmanager.getplugin("capturemanager")
    started = time.monotonic()
    with capture.global_and_fixture_disabled():
        print(f"\nbuilding etcd and kube-apiserver into {directory} with {BUILD_SCRIPT.name} (cold: many minutes)")
        build = subprocess.run([str(BUILD_SCRIPT)], env=_build_env(), check=False)
        print(f"build_k8s.sh finished in {time.monotonic() - started:.0f}s (exit {build.returncode})")
    if build.returncode != 0:
        pytest.fail(f"scripts/build_k8s.sh failed with exit code {build.returncode}", pytrace=False)
    return directory


def free_port() -> int:
    """A port the kernel says is free on 127.0.0.1 (released before the server binds it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _write_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, the API server's serving certificate signed by it, and the service-account signing key pair."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hybridml-test-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # key_cert_sign, crl_sign
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.DNSName(name)
        for name in (
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        )
    ]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", "10.0.0.1")]
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    sa_key = ec.generate_private_key(ec.SECP256R1())
    ca_file = directory / "ca.crt"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "apiserver.crt").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    (directory / "apiserver.key").write_bytes(pem_key(server_key))
    (directory / "sa.key").write_bytes(pem_key(sa_key))
    (directory / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return ca_file, directory / "apiserver.crt", directory / "apiserver.key"


@dataclass(frozen=True)
class ControlPlane:
    """A running etcd + kube-apiserver pair and how to reach it.

    Attributes:
        server: The API server's URL (https://127.0.0.1:PORT).
        ca_file: The CA that signed the serving certificate.
        kubeconfig: A kubeconfig with contexts ``admin`` (current) and ``deployer``.
        admin_token: Static token of user ``admin`` in group ``system:masters``.
        deployer_token: Static token of user ``deployer`` (no groups, so no rights until a binding grants some).
        log_dir: Where etcd.log and kube-apiserver.log are written.
        external: The kubernetes ``Configuration`` of an external cluster's kubeconfig user
            (``HYBRIDML_TEST_KUBECONFIG``), used when no token is given; None for the tests' own control plane.
    """

    server: str
    ca_file: Path | None
    kubeconfig: Path
    admin_token: str
    deployer_token: str
    log_dir: Path
    external: Any = None

    def api_client(self, token: str | None = None) -> Any:
        """A ``kubernetes.client.ApiClient`` bearing ``token`` (default: the admin token, or the kubeconfig's user)."""
        from kubernetes import client

        if token is None and self.external is not None:
            return client.ApiClient(self.external)
        configuration = client.Configuration()
        configuration.host = self.server
        configuration.ssl_ca_cert = str(self.ca_file) if self.ca_file else None
        configuration.api_key = {"authorization": token or self.admin_token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(configuration)

    def dynamic(self, token: str | None = None) -> Any:
        """A ``kubernetes.dynamic.DynamicClient`` (server-side apply, custom resources) bearing ``token``."""
        from kubernetes import dynamic

        return dynamic.DynamicClient(self.api_client(token))


def _get(url: str, token: str, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait(what: str, probe: Any, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``probe()`` until it is true; fail with the log's tail when the process dies or time runs out."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if probe():
                return
        except (OSError, ssl.SSLError):
            pass  # not listening yet
        time.sleep(0.25)
    tail = log.read_text(errors="replace")[-3000:]
    state = f"exited with {process.returncode}" if process.poll() is not None else f"not ready in {START_TIMEOUT_S}s"
    raise RuntimeError(f"{what} {state}; last log lines:\n{tail}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def write_kubeconfig(
    path: Path, server: str, ca_file: Path | None, users: dict[str, str], namespace: str | None = None
) -> None:
    """A kubeconfig with one context per token user (named after it; the first is current), mode 0600."""
    context: dict[str, str] = {"cluster": "test"}
    if namespace is not None:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": name, "user": {"token": token}} for name, token in users.items()],
        "contexts": [{"name": name, "context": {**context, "user": name}} for name in users],
        "current-context": next(iter(users)),
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


def load_crds() -> list[dict[str, Any]]:
    """Every CustomResourceDefinition under ../shared/crds/{kserve,monitoring}, parsed."""
    crds = []
    for folder in CRD_DIRS:
        for path in sorted((CRD_ROOT / folder).glob("*.yaml")):
            # libyaml's loader: the pure-Python one takes seconds over the 2 MB InferenceService CRD.
            for document in yaml.load_all(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
                if document and document.get("kind") == "CustomResourceDefinition":
                    crds.append(document)
    return crds


def install_crds(plane: ControlPlane, crds: list[dict[str, Any]]) -> list[str]:
    """Create ``crds`` and wait until each is Established."""
    from kubernetes import client

    api = client.ApiextensionsV1Api(plane.api_client())
    names = []
    for crd in crds:
        try:
            # _preload_content=False: the generated models mangle some schema keys on the way back.
            api.create_custom_resource_definition(crd, _preload_content=False)
        except client.ApiException as exc:
            # An external cluster keeps the CRDs it has (its KServe's own): only missing ones are added.
            if exc.status != 409 or plane.external is None:
                raise
        names.append(crd["metadata"]["name"])
    deadline = time.monotonic() + 60
    pending = set(names)
    while pending and time.monotonic() < deadline:
        for name in sorted(pending):
            raw = api.read_custom_resource_definition(name, _preload_content=False)
            conditions = (json.loads(raw.data).get("status") or {}).get("conditions") or []
            if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                pending.discard(name)
        time.sleep(0.2)
    if pending:
        raise RuntimeError(f"CRDs not Established within 60s: {sorted(pending)}")
    return names


def make_namespace(plane: ControlPlane, enforce: str = "restricted", prefix: str = "t") -> str:
    """A fresh namespace at Pod Security level ``enforce``, with its ``default`` ServiceAccount.

    Unless a kube-controller-manager runs, the test plays its serviceaccount controller: without the ``default``
    ServiceAccount the ServiceAccount admission plugin refuses every pod before Pod Security sees it.
    """
    import uuid

    from kubernetes import client

    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(plane.api_client())
    labels = {
        "pod-security.kubernetes.io/enforce": enforce,
        "pod-security.kubernetes.io/enforce-version": "latest",
        TEST_NAMESPACE_LABEL: SESSION,
    }
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)))
    try:
        account = client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="default"))
        core.create_namespaced_service_account(name, account)
    except client.ApiException as exc:
        if exc.status != 409:  # a running kube-controller-manager got there first
            raise
    return name


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd and kube-apiserver on 127.0.0.1 with the shared CRDs installed, for the whole test session.

    With ``HYBRIDML_TEST_KUBECONFIG`` set, the cluster it names instead (see :func:`external_plane`).
    """
    pytest.importorskip("kubernetes")
    if not CRD_ROOT.is_dir():
        pytest.skip(f"the shared CRDs are not at {CRD_ROOT}")
    external = external_kubeconfig()
    if external is not None:
        yield from external_plane(external, tmp_path_factory.mktemp("k8s"))
        return
    with start_control_plane(ensure_binaries(request.config), tmp_path_factory.mktemp("k8s")) as plane:
        yield plane


def external_plane(kubeconfig: Path, work: Path) -> Iterator[ControlPlane]:
    """A user's cluster as the test bed: its kubeconfig's user acts as admin; missing shared CRDs are added.

    Only tests marked ``any_cluster`` run there (see ``pytest_collection_modifyitems``), and every namespace they
    created (labelled ``TEST_NAMESPACE_LABEL``) is deleted at the end.
    """
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(
        config_file=str(kubeconfig), context=os.environ.get("HYBRIDML_TEST_CONTEXT"), client_configuration=configuration
    )
    ca_file = Path(configuration.ssl_ca_cert) if configuration.ssl_ca_cert else None
    plane = ControlPlane(configuration.host, ca_file, kubeconfig, "", "", work, external=configuration)
    install_crds(plane, load_crds())
    try:
        yield plane
    finally:
        core = client.CoreV1Api(plane.api_client())
        for namespace in core.list_namespace(label_selector=f"{TEST_NAMESPACE_LABEL}={SESSION}").items:
            core.delete_namespace(namespace.metadata.name)


@contextlib.contextmanager
def start_control_plane(binaries: Path, work: Path) -> Iterator[ControlPlane]:
    """Start etcd and kube-apiserver from ``binaries`` with their files under ``work``; stop both on exit."""
    ca_file, cert_file, key_file = _write_certificates(work)
    admin_token, deployer_token = secrets.token_hex(16), secrets.token_hex(16)
    tokens = work / "tokens.csv"
    # token,user,uid,"groups": system:masters is the bootstrap superuser group RBAC always allows.
    tokens.write_text(f'{admin_token},admin,admin,"system:masters"\n{deployer_token},deployer,deployer\n')
    tokens.chmod(0o600)

    # Parsing the CRDs takes seconds; do it while etcd and the API server start.
    loading = ThreadPoolExecutor(max_workers=1)
    crds = loading.submit(load_crds)
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    etcd_log = work / "etcd.log"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with etcd_log.open("wb") as out:
            etcd = subprocess.Popen(
                [
                    str(binaries / "etcd"),
                    "--name=test",
                    f"--data-dir={work / 'etcd'}",
                    f"--listen-client-urls={etcd_url}",
                    f"--advertise-client-urls={etcd_url}",
                    f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                    f"--initial-cluster=test=http://127.0.0.1:{peer_port}",
                    # The KServe InferenceService CRD plus its managedFields is close to etcd's 1.5 MiB default.
                    "--max-request-bytes=8388608",
                    # Throwaway data: skip fsync so a loaded CI machine starts and writes quickly.
                    "--unsafe-no-fsync",
                    "--log-level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        processes.append(etcd)
        _wait("etcd", lambda: _get(f"{etcd_url}/health", "")[0] == 200, etcd, etcd_log)

        server = f"https://127.0.0.1:{api_port}"
        api_log = work / "kube-apiserver.log"
        with api_log.open("wb") as out:
            apiserver = subprocess.Popen(
                [
                    str(binaries / "kube-apiserver"),
                    f"--etcd-servers={etcd_url}",
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    # The lease reconciler refuses a loopback advertise address; nothing here needs the
                    # default/kubernetes Endpoints it maintains (no pods run to dial it).
                    "--endpoint-reconciler-type=none",
                    f"--secure-port={api_port}",
                    f"--tls-cert-file={cert_file}",
                    f"--tls-private-key-file={key_file}",
                    f"--client-ca-file={ca_file}",
                    f"--token-auth-file={tokens}",
                    "--authorization-mode=RBAC",
                    # PodSecurity is a default plugin already; naming it keeps it on whatever the defaults become.
                    "--enable-admission-plugins=PodSecurity",
                    # Privileged pods pass validation, so a refusal can only come from PodSecurity.
                    "--allow-privileged=true",
                    f"--service-account-issuer={ISSUER}",
                    f"--service-account-key-file={work / 'sa.pub'}",
                    f"--service-account-signing-key-file={work / 'sa.key'}",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    f"--cert-dir={work / 'certs'}",
                    "--profiling=false",
                    "--v=1",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        processes.append(apiserver)
        context = ssl.create_default_context(cafile=str(ca_file))
        _wait(
            "kube-apiserver",
            lambda: _get(f"{server}/readyz", admin_token, context)[0] == 200,
            apiserver,
            api_log,
        )
        kubeconfig = work / "kubeconfig"
        write_kubeconfig(kubeconfig, server, ca_file, {"admin": admin_token, "deployer": deployer_token})
        plane = ControlPlane(server, ca_file, kubeconfig, admin_token, deployer_token, work)
        install_crds(plane, crds.result())
        yield plane
    finally:
        loading.shutdown(wait=True)
        for process in reversed(processes):
            _stop(process)


@pytest.fixture(scope="module")
def controller_manager(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    """kube-controller-manager against ``control_plane`` (Deployments become ReplicaSets and Pods), if built.

    Module-scoped (it starts in about a second) so its controllers (garbage collector, serviceaccount,
    namespace) act only while the module that asked for them runs, never under another module's tests.

    It is built only on request (``K8S_COMPONENTS="kube-controller-manager" scripts/build_k8s.sh``), so the
    tests that need it skip when it is absent. Nothing schedules or runs the Pods it creates.
    """
    binary = bin_dir() / "kube-controller-manager"
    if not os.access(binary, os.X_OK):
        pytest.skip(f"{binary} is not built (K8S_COMPONENTS=kube-controller-manager scripts/build_k8s.sh)")
    work = control_plane.log_dir
    log = work / "kube-controller-manager.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(binary),
                f"--kubeconfig={control_plane.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
                "--controllers=*",
                f"--service-account-private-key-file={work / 'sa.key'}",
                f"--root-ca-file={control_plane.ca_file}",
                "--v=1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # Ready when its serviceaccount controller has given kube-system its default ServiceAccount.
        from kubernetes import client

        core = client.CoreV1Api(control_plane.api_client())

        def has_default_account() -> bool:
            names = [account.metadata.name for account in core.list_namespaced_service_account("kube-system").items]
            return "default" in names

        _wait("kube-controller-manager", has_default_account, process, log)
        yield control_plane
    finally:
        _stop(process)


KWOK_NODE = "kwok-node-0"
POD_CIDR = "10.244.0.0/16"


@pytest.fixture(scope="module")
def kwok_node(control_plane: ControlPlane) -> Iterator[str]:
    """kwok against ``control_plane`` with one fake Node it keeps Ready; yields the Node's name, if kwok is built.

    kwok plays the kubelet: Pods bound to the Node (``spec.nodeName``; there is no scheduler) are marked
    Running and Ready with an IP from ``POD_CIDR``. No container runs. Built only on request
    (``K8S_COMPONENTS=kwok scripts/build_k8s.sh``, which also writes kwok's stages to kwok-stages.yaml).
    """
    binary, stages = bin_dir() / "kwok", bin_dir() / "kwok-stages.yaml"
    if not (os.access(binary, os.X_OK) and stages.is_file()):
        pytest.skip(f"{binary} is not built (K8S_COMPONENTS=kwok scripts/build_k8s.sh)")
    log = control_plane.log_dir / "kwok.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(binary),
                f"--kubeconfig={control_plane.kubeconfig}",
                f"--config={stages}",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                f"--server-address=127.0.0.1:{free_port()}",
                f"--cidr={POD_CIDR}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        from kubernetes import client

        core = client.CoreV1Api(control_plane.api_client())
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": KWOK_NODE, "annotations": {"kwok.x-k8s.io/node": "fake"}, "labels": {"type": "kwok"}},
        }
        try:
            core.create_node(node)
        except client.ApiException as exc:
            if exc.status != 409:  # an earlier module's kwok registered it; this kwok takes it over
                raise

        def node_ready() -> bool:
            conditions = core.read_node(KWOK_NODE).status.conditions or []
            return any(c.type == "Ready" and c.status == "True" for c in conditions)

        _wait("kwok", node_ready, process, log)
        yield KWOK_NODE
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def scheduler(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    """kube-scheduler against ``control_plane`` (binds Pods to Nodes, such as kwok's), if built.

    Built only on request (``K8S_COMPONENTS=kube-scheduler scripts/build_k8s.sh``).
    """
    binary = bin_dir() / "kube-scheduler"
    if not os.access(binary, os.X_OK):
        pytest.skip(f"{binary} is not built (K8S_COMPONENTS=kube-scheduler scripts/build_k8s.sh)")
    log = control_plane.log_dir / "kube-scheduler.log"
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(binary),
                f"--kubeconfig={control_plane.kubeconfig}",
                f"--authentication-kubeconfig={control_plane.kubeconfig}",
                f"--authorization-kubeconfig={control_plane.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                "--leader-elect=false",
                "--v=1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # /healthz is open to anonymous users by the scheduler's default authorization (always-allow paths).
        # It serves /healthz with a self-signed certificate it makes itself; only liveness is read through it.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        _wait("kube-scheduler", lambda: _get(f"https://127.0.0.1:{port}/healthz", "", context)[0] == 200, process, log)
        yield control_plane
    finally:
        _stop(process)


# KServe's controller lives in its own module; imported last, since it builds on the definitions above.
from tests.integration.k8s.kserve_controller import kserve_controller  # noqa: E402,F401
