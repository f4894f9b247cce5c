"""The kserve deploy target against the real kube-apiserver of ``conftest.control_plane``.

Nothing reconciles here (no KServe controller, no kubelet), so the test plays KServe's controller: the
target's injected ``sleep`` (called between two status polls) writes each InferenceService's ``status`` through
the status subresource, as KServe would after reconciling, according to a scripted behaviour. There is no data
plane either: :meth:`KServeTarget.invoke` (HTTP to the status URL) is not exercised here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from hybridml.core.schema import NUMERIC, FeatureSchema, FeatureSpec
from hybridml.deploy.config import KServeConfig
from hybridml.deploy.contract import ModelRef
from hybridml.deploy.kserve import KServeTarget, render
from hybridml.deploy.kserve.render import Served
from hybridml.errors import (
    ConflictError,
    HybridmlError,
    InvalidInputError,
    NotFoundError,
    NotReadyError,
    PermissionDeniedError,
)

if TYPE_CHECKING:
    from tests.integration.k8s.conftest import ControlPlane

pytestmark = pytest.mark.integration

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

from tests.integration.k8s.kserve_bed import SOURCE_URI, Controller, kserve_namespace, make_namespace  # noqa: E402
from tests.integration.sagemaker.conftest import registry_home, sm_bundles  # noqa: E402, F401 - the CLI test's registry

RBAC = Path(render.__file__).with_name("rbac.yaml")
GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
SCHEMA = FeatureSchema("label", ("no", "yes"), (FeatureSpec("amount", NUMERIC, False),), 10, "sha256:0")
OTHER = FeatureSchema("label", ("no", "yes"), (FeatureSpec("age", NUMERIC, False),), 10, "sha256:1")
IMAGE = "registry.example/hybridml-predictor:1"


def ref(version: str, schema: FeatureSchema = SCHEMA, name: str = "churn") -> ModelRef:
    return ModelRef(name, version, f"s3://models/{name}/{version}", schema)


class Bed:
    """One test's namespace, its KServe namespace, the playing controller and a target over them."""

    def __init__(self, plane: ControlPlane, mode: str | None = "RawDeployment", token: str | None = None) -> None:
        self.plane = plane
        self.ns = make_namespace(plane)
        self.kserve_ns = kserve_namespace(plane, mode)
        self.controller = Controller(plane, self.ns)
        self.custom = client.CustomObjectsApi(plane.api_client())
        self.target = self.make(token)

    def config(self, **changes: Any) -> KServeConfig:
        settings: dict[str, Any] = {
            "namespace": self.ns,
            "kserve_namespace": self.kserve_ns,
            "image": IMAGE,
            "ready_timeout_s": 5.0,
            "poll_s": 1.0,
            **changes,
        }
        return KServeConfig(**settings)

    def make(self, token: str | None = None, **changes: Any) -> KServeTarget:
        return KServeTarget(
            self.config(**changes),
            api_client=self.plane.api_client(token),
            clock=self.controller.clock,
            sleep=self.controller.sleep,
        )

    def stored(self, name: str = "churn") -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)
        return obj

    def names(self) -> list[str]:
        items = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL)["items"]
        return sorted(item["metadata"]["name"] for item in items)


@pytest.fixture
def bed(control_plane: ControlPlane) -> Bed:
    return Bed(control_plane)


def rendered(bed: Bed, mode: str, stable: str, canary: str | None = None, percent: int = 0) -> dict[str, Any]:
    served = Served(canary, f"s3://models/churn/{canary}") if canary else None
    return render.inference_service(
        bed.config(), "churn", mode, Served(stable, f"s3://models/churn/{stable}"), served, percent, ("amount",)
    )


# --- apply, wait, canary per mode -------------------------------------------------------------------------------


def test_deploy_applies_the_rendered_object_server_side_and_waits_for_ready(bed: Bed) -> None:
    deployed = bed.target.deploy(ref("1"))
    assert (deployed.name, deployed.target, deployed.stable_version, deployed.canary_version) == (
        "churn",
        "kserve",
        "1",
        None,
    )
    assert (deployed.canary_percent, deployed.ready, deployed.endpoint) == (
        0,
        True,
        f"http://churn.{bed.ns}.example.com",
    )
    assert deployed.detail == "stable 1 (Standard mode)"
    stored = bed.stored()
    wanted = rendered(bed, "Standard", "1")
    assert stored["spec"] == wanted["spec"]
    assert stored["metadata"]["labels"] == wanted["metadata"]["labels"]
    assert stored["metadata"]["annotations"] == wanted["metadata"]["annotations"]
    managers = {(e["manager"], e["operation"], e.get("subresource", "")) for e in stored["metadata"]["managedFields"]}
    assert ("hybridml", "Apply", "") in managers
    # The first poll saw no status; one sleep later the controller had written it.
    assert bed.controller.sleeps == [0.05]
    runtime = bed.custom.get_namespaced_custom_object(GROUP, "v1alpha1", bed.ns, "servingruntimes", "hybridml")
    assert runtime["spec"] == render.serving_runtime(bed.config())["spec"]
    assert bed.target.status("churn") == deployed
    assert bed.target.list() == [deployed]


def test_a_serving_runtime_installed_by_the_chart_is_left_as_it_is(bed: Bed) -> None:
    installed = render.serving_runtime(bed.config())
    installed["spec"]["containers"][0]["image"] = "registry.example.com/hybridml/predictor:chart"
    bed.custom.create_namespaced_custom_object(
        GROUP, "v1alpha1", bed.ns, "servingruntimes", installed, field_manager="helm"
    )
    assert bed.target.deploy(ref("1")).ready
    runtime = bed.custom.get_namespaced_custom_object(GROUP, "v1alpha1", bed.ns, "servingruntimes", "hybridml")
    assert runtime["spec"]["containers"][0]["image"] == "registry.example.com/hybridml/predictor:chart"
    assert {entry["manager"] for entry in runtime["metadata"]["managedFields"]} == {"helm"}


def test_standard_canary_set_traffic_and_promote(bed: Bed) -> None:
    bed.target.deploy(ref("1"))
    canary = bed.target.deploy(ref("2"), traffic_percent=30)
    assert (canary.stable_version, canary.canary_version, canary.canary_percent, canary.ready) == ("1", "2", 30, True)
    assert bed.stored()["spec"] == rendered(bed, "Standard", "1", "2", 30)["spec"]
    assert bed.stored()["spec"]["canary"][0]["trafficPercent"] == 30

    moved = bed.target.set_traffic("churn", 80)
    assert (moved.canary_version, moved.canary_percent) == ("2", 80)
    assert bed.stored()["spec"]["canary"][0]["trafficPercent"] == 80

    promoted = bed.target.promote("churn")
    assert (promoted.stable_version, promoted.canary_version, promoted.canary_percent, promoted.ready) == (
        "2",
        None,
        0,
        True,
    )
    stored = bed.stored()
    assert stored["spec"] == rendered(bed, "Standard", "2")["spec"]
    assert "canary" not in stored["spec"]
    assert render.ANN_CANARY not in stored["metadata"]["annotations"]
    assert stored["metadata"]["labels"]["hybridml.dev/version"] == "2"
    for operation in (bed.target.promote, bed.target.rollback):
        with pytest.raises(ConflictError, match="has no canary"):
            operation("churn")


def test_serverless_canary_uses_canary_traffic_percent_and_rollback_restores_it(
    control_plane: ControlPlane,
) -> None:
    bed = Bed(control_plane, mode="Serverless")
    bed.target.deploy(ref("1"))
    canary = bed.target.deploy(ref("2"), traffic_percent=25)
    assert (canary.stable_version, canary.canary_version, canary.canary_percent, canary.ready) == ("1", "2", 25, True)
    stored = bed.stored()
    assert stored["spec"] == rendered(bed, "Serverless", "1", "2", 25)["spec"]
    assert stored["spec"]["predictor"]["canaryTrafficPercent"] == 25
    assert stored["spec"]["predictor"]["model"]["storageUri"] == "s3://models/churn/2"
    assert "canary" not in stored["spec"]

    back = bed.target.rollback("churn")
    assert (back.stable_version, back.canary_version, back.canary_percent, back.ready) == ("1", None, 0, True)
    assert bed.stored()["spec"] == rendered(bed, "Serverless", "1")["spec"]


def test_standard_rollback_drops_the_canary(bed: Bed) -> None:
    bed.target.deploy(ref("1"))
    bed.target.deploy(ref("2"), traffic_percent=40)
    back = bed.target.rollback("churn")
    assert (back.stable_version, back.canary_version, back.canary_percent) == ("1", None, 0)
    assert bed.stored()["spec"] == rendered(bed, "Standard", "1")["spec"]


def test_a_canary_needs_a_stable_version_and_the_same_features(bed: Bed) -> None:
    with pytest.raises(InvalidInputError, match="has no stable version yet"):
        bed.target.deploy(ref("2"), traffic_percent=10)
    assert bed.names() == []
    bed.target.deploy(ref("1"))
    with pytest.raises(InvalidInputError, match="has different features than stable '1'"):
        bed.target.deploy(ref("2", OTHER), traffic_percent=10)
    assert bed.stored()["spec"] == rendered(bed, "Standard", "1")["spec"]


# --- budgets and failures ---------------------------------------------------------------------------------------


def test_a_new_deployment_never_ready_is_deleted_and_the_error_says_so(bed: Bed) -> None:
    bed.controller.behaviour = "never"
    with pytest.raises(NotReadyError) as failed:
        bed.target.deploy(ref("1"))
    assert str(failed.value) == (
        "deployment 'churn' not ready after 5s (last status: KServe has not observed generation 1 yet (observed"
        f" None); no Ready condition yet); deleted InferenceService {bed.ns}/churn (the shared ServingRuntime"
        f" {bed.ns}/hybridml stays)"
    )
    assert sum(bed.controller.sleeps) == pytest.approx(5.0)  # the budget, kept exactly
    assert bed.names() == []


def test_a_canary_never_ready_puts_the_previous_spec_back(bed: Bed) -> None:
    bed.target.deploy(ref("1"))
    bed.controller.behaviour = "never"
    with pytest.raises(NotReadyError, match=rf"re-applied the previous spec of InferenceService {bed.ns}/churn"):
        bed.target.deploy(ref("2"), traffic_percent=20)
    assert bed.stored()["spec"] == rendered(bed, "Standard", "1")["spec"]


def test_a_failed_canary_revision_rolls_back_to_stable(bed: Bed) -> None:
    bed.target.deploy(ref("1"))
    bed.controller.behaviour = "canary-fails"
    with pytest.raises(NotReadyError) as failed:
        bed.target.deploy(ref("2"), traffic_percent=20)
    assert "canary '2' not ready: model FailedToLoad" in str(failed.value)
    assert str(failed.value).endswith(f"re-applied the previous spec of InferenceService {bed.ns}/churn (stable 1)")
    assert bed.stored()["spec"] == rendered(bed, "Standard", "1")["spec"]
    bed.controller.behaviour = "ready"
    bed.controller.sleep(0)
    assert bed.target.status("churn").ready


def test_a_failed_canary_shows_its_live_traffic_share(bed: Bed) -> None:
    # status reports what the data plane does: the canary asked for 20 % but gets 0 once its model failed.
    bed.target.deploy(ref("1"))
    bed.target._apply("inferenceservices", rendered(bed, "Standard", "1", "2", 20))  # applied, not waited for
    bed.controller.behaviour = "canary-fails"
    bed.controller.sleep(0)
    current = bed.target.status("churn")
    assert (current.canary_version, current.canary_percent, current.ready) == ("2", 0, False)
    assert current.detail == "canary '2' not ready: model FailedToLoad"


def test_standard_mode_is_ready_only_once_the_stable_predictor_deployment_serves_the_stable_version(bed: Bed) -> None:
    """KServe's status can read Ready for the spec before a change; the stable Deployment's rollout decides."""
    bed.target.deploy(ref("1"))
    apps = client.AppsV1Api(bed.plane.api_client())
    where = f"Deployment {bed.ns}/churn-predictor"
    bed.target._apply("inferenceservices", rendered(bed, "Standard", "2"))  # applied, not waited for
    generation = bed.stored()["metadata"]["generation"]
    # The status from before the change, stamped with the new generation (KServe copies the Deployment's).
    bed.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, bed.ns, PLURAL, "churn", {"status": {"observedGeneration": generation}}
    )
    current = bed.target.status("churn")
    assert (current.stable_version, current.ready) == ("2", False)
    assert current.detail == (
        f"{where} serves version '1' (s3://models/churn/1), not stable '2' (s3://models/churn/2) yet"
    )

    bed.controller.sleep(0)  # KServe updates the Deployment; it rolls out
    assert (bed.target.status("churn").ready, bed.target.status("churn").detail) == (True, "stable 2 (Standard mode)")

    def deployment_status(**fields: int) -> None:
        apps.patch_namespaced_deployment_status("churn-predictor", bed.ns, {"status": fields})

    deployment_status(availableReplicas=0)
    assert bed.target.status("churn").detail == f"{where} rolling out: 1 updated, 0 available, 1 in all, of 1 replicas"
    deployment_status(availableReplicas=1, updatedReplicas=0)
    assert bed.target.status("churn").detail == f"{where} rolling out: 0 updated, 1 available, 1 in all, of 1 replicas"
    deployment_status(updatedReplicas=1, replicas=2)  # an old pod still running beside the new one
    assert bed.target.status("churn").detail == f"{where} rolling out: 1 updated, 1 available, 2 in all, of 1 replicas"
    deployment_status(replicas=1)
    assert bed.target.status("churn").ready
    stored = apps.read_namespaced_deployment("churn-predictor", bed.ns).metadata.generation
    deployment_status(observedGeneration=stored - 1)
    assert bed.target.status("churn").detail == (
        f"{where}: generation {stored} not observed yet (observed {stored - 1})"
    )
    # The same version from another storageUri is not what the InferenceService asks for.
    body = {"spec": {"template": {"metadata": {"annotations": {SOURCE_URI: "s3://models/churn/other"}}}}}
    apps.patch_namespaced_deployment("churn-predictor", bed.ns, body)
    assert bed.target.status("churn").detail == (
        f"{where} serves version '2' (s3://models/churn/other), not stable '2' (s3://models/churn/2) yet"
    )
    apps.delete_namespaced_deployment("churn-predictor", bed.ns)
    assert bed.target.status("churn").detail == f"no {where} yet"
    assert bed.target.list()[0].ready is False
    bed.controller.sleep(0)
    assert bed.target.status("churn").ready


# --- mode detection -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        (None, "cannot tell KServe's deployment mode: no ConfigMap {ks}/inferenceservice-config"),
        ("ModelMesh", "KServe deployment mode 'ModelMesh' is not supported by the kserve target"),
    ],
    ids=["no-configmap", "modelmesh"],
)
def test_an_unknown_mode_is_refused_before_anything_is_applied(
    control_plane: ControlPlane, mode: str | None, message: str
) -> None:
    bed = Bed(control_plane, mode=mode)
    with pytest.raises(InvalidInputError, match=message.format(ks=bed.kserve_ns)):
        bed.target.deploy(ref("1"))
    assert bed.names() == []


def test_the_objects_own_mode_wins_and_a_forced_other_mode_is_refused(control_plane: ControlPlane) -> None:
    bed = Bed(control_plane, mode="Serverless")
    bed.target.deploy(ref("1"))
    # KServe's default changes afterwards: the existing object keeps the mode it was created in.
    client.CoreV1Api(control_plane.api_client()).patch_namespaced_config_map(
        "inferenceservice-config", bed.kserve_ns, {"data": {"deploy": '{"defaultDeploymentMode": "Standard"}'}}
    )
    bed.target.deploy(ref("2"), traffic_percent=10)
    assert bed.stored()["spec"]["predictor"]["canaryTrafficPercent"] == 10
    with pytest.raises(ConflictError, match="runs in Serverless mode, not Standard"):
        bed.make(mode="Standard").deploy(ref("3"))


# --- API errors -----------------------------------------------------------------------------------------------------


def test_a_field_owned_by_another_manager_is_a_conflict_not_overwritten(bed: Bed) -> None:
    bed.target.deploy(ref("1"))
    other = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InferenceService", "metadata": {"name": "churn"}}
    other["spec"] = {"predictor": {"maxReplicas": 9}}
    bed.plane.api_client().call_api(
        f"/apis/{GROUP}/{VERSION}/namespaces/{bed.ns}/{PLURAL}/churn",
        "PATCH",
        query_params=[("fieldManager", "someone-else"), ("force", "true")],
        header_params={"Content-Type": "application/apply-patch+yaml"},
        body=other,
        auth_settings=["BearerToken"],
    )
    with pytest.raises(ConflictError) as conflict:
        bed.target.deploy(ref("2"))
    assert str(conflict.value).startswith(f"patch inferenceservices in namespace {bed.ns!r} conflicts: Apply failed")
    assert ".spec.predictor.maxReplicas" in str(conflict.value) and "someone-else" in str(conflict.value)
    assert bed.stored()["spec"]["predictor"]["maxReplicas"] == 9


def test_delete_and_list_touch_only_what_the_target_created(bed: Bed) -> None:
    foreign = rendered(bed, "Standard", "1")
    foreign["metadata"] = {"name": "foreign", "namespace": bed.ns}
    bed.custom.create_namespaced_custom_object(GROUP, VERSION, bed.ns, PLURAL, foreign)
    bed.target.deploy(ref("1"))
    assert [d.name for d in bed.target.list()] == ["churn"]
    with pytest.raises(
        ConflictError, match=f"InferenceService {bed.ns}/foreign exists but was not created by hybridml"
    ):
        bed.target.delete("foreign")
    with pytest.raises(ConflictError, match="not created by hybridml"):
        bed.target.deploy(ref("1", name="foreign"))
    bed.target.delete("churn")
    assert bed.names() == ["foreign"]
    with pytest.raises(NotFoundError, match=f"no kserve deployment 'churn' in namespace '{bed.ns}'"):
        bed.target.status("churn")
    with pytest.raises(NotFoundError):
        bed.target.delete("churn")


def test_shadow_is_refused_with_the_reason(bed: Bed) -> None:
    bed.target.deploy(ref("1"))
    with pytest.raises(InvalidInputError, match="KServe InferenceServices do not mirror requests"):
        bed.target.shadow("churn", ref("2"))


# --- RBAC: the shipped Role --------------------------------------------------------------------------------------


def bind_shipped_roles(plane: ControlPlane, ns: str, kserve_ns: str) -> str:
    """Create rbac.yaml's Roles (the mode Role in ``kserve_ns``), bind them to SA ``deployer``; its token."""
    core = client.CoreV1Api(plane.api_client())
    rbac = client.RbacAuthorizationV1Api(plane.api_client())
    core.create_namespaced_service_account(ns, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="deployer")))
    subject = client.RbacV1Subject(kind="ServiceAccount", name="deployer", namespace=ns)
    for role in yaml.safe_load_all(RBAC.read_text()):
        where = kserve_ns if role["metadata"].get("namespace") == "kserve" else ns
        role["metadata"]["namespace"] = where
        rbac.create_namespaced_role(where, role)
        rbac.create_namespaced_role_binding(
            where,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name=role["metadata"]["name"]),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="Role", name=role["metadata"]["name"]
                ),
                subjects=[subject],
            ),
        )
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600))
    token: str = core.create_namespaced_service_account_token("deployer", ns, request).status.token
    return token


def test_the_shipped_role_allows_every_target_operation_and_nothing_else(control_plane: ControlPlane) -> None:
    bed = Bed(control_plane)
    token = bind_shipped_roles(control_plane, bed.ns, bed.kserve_ns)
    target = bed.make(token)
    assert target.deploy(ref("1")).ready
    assert target.deploy(ref("2"), traffic_percent=30).canary_percent == 30
    assert target.set_traffic("churn", 50).canary_percent == 50
    assert target.rollback("churn").canary_version is None
    target.deploy(ref("3"), traffic_percent=10)
    assert target.promote("churn").stable_version == "3"
    assert [d.name for d in target.list()] == ["churn"]
    assert target.wait_until_ready("churn", 1).ready
    target.delete("churn")
    assert bed.names() == []

    user = f"system:serviceaccount:{bed.ns}:deployer"
    other = make_namespace(control_plane)
    with pytest.raises(PermissionDeniedError) as refused:
        bed.make(token, namespace=other).deploy(ref("1"))
    assert str(refused.value) == (
        f"not allowed to get inferenceservices in namespace {other!r}: inferenceservices.serving.kserve.io"
        f' "churn" is forbidden: User "{user}" cannot get resource "inferenceservices" in API group'
        f' "serving.kserve.io" in the namespace "{other}"'
    )


# --- Pod Security: the real admission decides ------------------------------------------------------------------


def dry_run_pod(plane: ControlPlane, ns: str, pod: dict[str, Any]) -> None:
    client.CoreV1Api(plane.api_client()).create_namespaced_pod(ns, pod, dry_run="All")


@pytest.mark.any_cluster
def test_a_restricted_namespace_admits_the_rendered_predictor_pod(control_plane: ControlPlane) -> None:
    ns = make_namespace(control_plane, "restricted")
    config = KServeConfig(namespace=ns, image=IMAGE)
    dry_run_pod(control_plane, ns, render.pod(config, "churn", Served("1", "s3://models/churn/1")))
    # The same pod without its controls is refused by the same admission: the check above can fail.
    bare = render.pod(config, "churn", Served("1", "s3://models/churn/1"))
    bare["spec"].pop("securityContext")
    bare["spec"]["containers"][0].pop("securityContext")
    with pytest.raises(ApiException) as refused:
        dry_run_pod(control_plane, ns, bare)
    assert refused.value.status == 403
    assert 'violates PodSecurity "restricted:latest"' in json.loads(refused.value.body)["message"]
    assert client.CoreV1Api(control_plane.api_client()).list_namespaced_pod(ns).items == []


# --- 5xx through a fault-injecting proxy ---------------------------------------------------------------------------


class FaultProxy:
    """Plain HTTP on 127.0.0.1 in front of the API server's TLS port, answering ``fail`` before forwarding.

    ``faults`` is a list of (method, status) consumed in order: a request whose method matches the head of the
    list gets that status (a Status body, as the API server or a load balancer in front of it sends) instead
    of being forwarded.
    """

    def __init__(self, plane: ControlPlane) -> None:
        import http.client
        import ssl
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        upstream = urlsplit(plane.server)
        context = ssl.create_default_context(cafile=str(plane.ca_file))
        self.faults: list[tuple[str, int]] = []
        self.seen: list[tuple[str, str, int]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def handle_one(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.faults and proxy.faults[0][0] == self.command:
                    _, code = proxy.faults.pop(0)
                    payload = json.dumps({"kind": "Status", "status": "Failure", "message": "injected", "code": code})
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload.encode())
                    proxy.seen.append((self.command, self.path, code))
                    return
                connection = http.client.HTTPSConnection(upstream.hostname, upstream.port, context=context, timeout=10)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                connection.request(self.command, self.path, body=body or None, headers=headers)
                response = connection.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                proxy.seen.append((self.command, self.path, response.status))
                connection.close()

            def do_GET(self) -> None:
                self.handle_one()

            def do_PATCH(self) -> None:
                self.handle_one()

            def do_DELETE(self) -> None:
                self.handle_one()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def api_client(self, token: str) -> Any:
        configuration = client.Configuration()
        configuration.host = self.url
        configuration.api_key = {"authorization": token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(configuration)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(control_plane: ControlPlane) -> Any:
    fault_proxy = FaultProxy(control_plane)
    yield fault_proxy
    fault_proxy.close()


def test_5xx_are_retried_with_backoff_through_a_faulty_proxy(bed: Bed, proxy: FaultProxy) -> None:
    target = KServeTarget(
        bed.config(),
        api_client=proxy.api_client(control_plane_token(bed)),
        clock=bed.controller.clock,
        sleep=bed.controller.sleep,
    )
    proxy.faults = [("GET", 503), ("GET", 502), ("PATCH", 503), ("PATCH", 504)]
    assert target.deploy(ref("1")).ready
    isvc = f"/apis/{GROUP}/{VERSION}/namespaces/{bed.ns}/{PLURAL}/churn"
    runtime = f"/apis/{GROUP}/v1alpha1/namespaces/{bed.ns}/servingruntimes/hybridml"
    apply = "?fieldManager=hybridml&force=false"
    assert proxy.seen[:9] == [
        ("GET", isvc, 503),
        ("GET", isvc, 502),
        ("GET", isvc, 404),
        ("GET", f"/api/v1/namespaces/{bed.kserve_ns}/configmaps/inferenceservice-config", 200),
        ("GET", runtime, 404),
        ("PATCH", runtime + apply, 503),
        ("PATCH", runtime + apply, 504),
        ("PATCH", runtime + apply, 201),
        ("PATCH", isvc + apply, 201),
    ]
    assert proxy.faults == []
    # Backoff pauses (0.2 s doubling, per call), then the wait's first poll pause (0.05 s).
    assert bed.controller.sleeps == [0.2, 0.4, 0.2, 0.4, 0.05]
    assert bed.stored()["spec"] == rendered(bed, "Standard", "1")["spec"]


def test_5xx_past_the_attempts_is_not_ready_and_a_500_on_apply_is_not_retried(bed: Bed, proxy: FaultProxy) -> None:
    target = KServeTarget(
        bed.config(max_attempts=3),
        api_client=proxy.api_client(control_plane_token(bed)),
        clock=bed.controller.clock,
        sleep=bed.controller.sleep,
    )
    proxy.faults = [("GET", 503)] * 3
    with pytest.raises(
        NotReadyError,
        match=f"get inferenceservices in namespace '{bed.ns}': the Kubernetes API answered 503 3 times: injected",
    ):
        target.status("churn")
    assert bed.controller.sleeps == [0.2, 0.4]
    proxy.faults = [("PATCH", 500)]
    with pytest.raises(HybridmlError, match=r"patch servingruntimes in namespace .* failed with 500: injected"):
        target.deploy(ref("1"))
    assert proxy.faults == [] and bed.names() == []


def control_plane_token(bed: Bed) -> str:
    return bed.plane.admin_token


def test_a_failed_serverless_canary_revision_rolls_back_to_stable(control_plane: ControlPlane) -> None:
    bed = Bed(control_plane, mode="Serverless")
    bed.target.deploy(ref("1"))
    bed.controller.behaviour = "canary-fails"
    with pytest.raises(NotReadyError) as failed:
        bed.target.deploy(ref("2"), traffic_percent=20)
    assert "canary '2' not ready: revision churn-predictor-00002 (ready: churn-predictor-00001)" in str(failed.value)
    assert bed.stored()["spec"] == rendered(bed, "Serverless", "1")["spec"]


# --- configuration from a kubeconfig, through the factory ---------------------------------------------------------


def test_the_factory_builds_the_target_from_a_kubeconfig_and_its_context(control_plane: ControlPlane) -> None:
    from hybridml.deploy import make_target

    bed = Bed(control_plane)
    admin = make_target(bed.config(kubeconfig=str(control_plane.kubeconfig)))
    assert isinstance(admin, KServeTarget) and admin.list() == []
    deployer = make_target(bed.config(kubeconfig=str(control_plane.kubeconfig), context="deployer"))
    with pytest.raises(PermissionDeniedError, match=f"^not allowed to list inferenceservices in namespace '{bed.ns}'"):
        deployer.list()
    missing = bed.config(kubeconfig=str(control_plane.log_dir / "no-such-kubeconfig"))
    with pytest.raises(InvalidInputError, match=r"^kserve target: no usable Kubernetes configuration"):
        make_target(missing)


# --- the CLI: `hybridml deploy --target kserve` records the deployment in the registry -----------------------------


def test_cli_deploy_applies_the_inference_service_and_records_it(
    control_plane: ControlPlane, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    import hybridml.cli
    from hybridml.registry import Registry
    from tests.integration.k8s.kserve_bed import ControllerThread

    home = request.getfixturevalue("registry_home")
    bed = Bed(control_plane)
    version = home.register("cli-churn")
    registry = Registry(home.tracking_uri, user="alice")
    registry.set_status("cli-churn", version, "Approved", reason="ok")
    before = len(registry.history("cli-churn", version))
    settings = {
        "namespace": bed.ns,
        "kserve_namespace": bed.kserve_ns,
        "kubeconfig": str(control_plane.kubeconfig),
        "image": IMAGE,
        "storage_uri_prefix": "s3://published/models",
        "ready_timeout_s": 20,
        "poll_s": 0.2,
    }
    config_file = tmp_path / "kserve.yaml"
    config_file.write_text(yaml.safe_dump(settings))
    running = ControllerThread(bed.controller)
    try:
        args = ["--home", str(home.home), "deploy", "--target", "kserve", "--model", f"cli-churn/{version}"]
        result = CliRunner().invoke(hybridml.cli.app, [*args, "--deploy-config", str(config_file), "--json"])
    finally:
        running.stop()
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert (payload["name"], payload["target"], payload["stable_version"], payload["ready"], payload["changed"]) == (
        "cli-churn",
        "kserve",
        str(version),
        True,
        True,
    )
    stored = bed.stored("cli-churn")
    assert stored["spec"]["predictor"]["model"]["storageUri"] == f"s3://published/models/cli-churn/{version}"
    events = registry.history("cli-churn", version)[before:]
    assert [(e.action, e.detail) for e in events] == [("deployment", "kserve cli-churn: stable at 100%")]
    assert json.loads(events[0].reason) == {
        "target": "kserve",
        "endpoint": f"http://cli-churn.{bed.ns}.example.com",
        "traffic_percent": 100,
        "stable": str(version),
        "canary": None,
    }


def test_without_the_mode_role_the_refusal_says_how_to_fix_it(control_plane: ControlPlane) -> None:
    bed = Bed(control_plane)
    token = bind_shipped_roles(control_plane, bed.ns, bed.kserve_ns)
    client.RbacAuthorizationV1Api(control_plane.api_client()).delete_namespaced_role_binding(
        "hybridml-kserve-mode", bed.kserve_ns
    )
    with pytest.raises(PermissionDeniedError) as refused:
        bed.make(token).deploy(ref("1"))
    message = str(refused.value)
    assert message.startswith(
        f"cannot tell KServe's deployment mode: not allowed to get configmaps in namespace '{bed.kserve_ns}': "
    )
    assert message.endswith("(bind rbac.yaml's hybridml-kserve-mode Role, or set mode: Serverless or Standard)")
    assert bed.names() == []
    assert bed.make(token, mode="Standard").deploy(ref("1")).ready  # a set mode needs no ConfigMap
