"""The test control plane decides for real: Pod Security admission, the KServe CRD schema, RBAC, status writes.

Every refusal asserted here comes from kube-apiserver (started by ``conftest.control_plane``), never from the
test: the restricted namespace's PodSecurity plugin, the InferenceService CRD's structural schema, and RBAC
over a ServiceAccount token issued by the API server's TokenRequest endpoint.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.integration.k8s.conftest import ControlPlane

pytestmark = pytest.mark.integration

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

from tests.integration.k8s.conftest import make_namespace  # noqa: E402

GROUP = "serving.kserve.io"
ISVC_API = f"{GROUP}/v1beta1"
MANAGER = "hybridml"


def namespace(plane: ControlPlane, enforce: str) -> str:
    """A fresh namespace with Pod Security ``enforce`` level and its ``default`` ServiceAccount."""
    return make_namespace(plane, enforce)


def restricted_pod(name: str) -> dict[str, Any]:
    """A pod that meets the ``restricted`` Pod Security profile (the fields it requires, nothing more)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "predictor",
                    "image": "example.invalid/predictor:1",
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
        },
    }


def privileged_pod(name: str) -> dict[str, Any]:
    """The restricted pod with its container privileged (and allowPrivilegeEscalation unset, as validation requires)."""
    pod = restricted_pod(name)
    pod["spec"]["containers"][0]["securityContext"] = {"privileged": True, "capabilities": {"drop": ["ALL"]}}
    return pod


def inference_service(name: str, namespace: str, **predictor: Any) -> dict[str, Any]:
    """A minimal InferenceService with an XGBoost model, with ``predictor`` fields added or overridden."""
    return {
        "apiVersion": ISVC_API,
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace, "labels": {"hybridml.dev/version": "3"}},
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "maxReplicas": 2,
                "model": {"modelFormat": {"name": "xgboost"}, "storageUri": "s3://models/churn/3"},
                **predictor,
            }
        },
    }


def body(exc: ApiException) -> dict[str, Any]:
    """The API server's Status object from a refused request."""
    status: dict[str, Any] = json.loads(exc.body)
    return status


# --- Pod Security -----------------------------------------------------------------------------------------


@pytest.mark.any_cluster
def test_restricted_namespace_refuses_a_privileged_pod(control_plane: ControlPlane) -> None:
    ns = namespace(control_plane, "restricted")
    core = client.CoreV1Api(control_plane.api_client())
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod(ns, privileged_pod("privileged"))
    status = body(refused.value)
    assert refused.value.status == 403
    assert status["reason"] == "Forbidden"
    assert 'violates PodSecurity "restricted:latest": privileged (container "predictor"' in status["message"]
    assert core.list_namespaced_pod(ns).items == []


@pytest.mark.any_cluster
def test_restricted_namespace_accepts_a_restricted_pod(control_plane: ControlPlane) -> None:
    ns = namespace(control_plane, "restricted")
    core = client.CoreV1Api(control_plane.api_client())
    core.create_namespaced_pod(ns, restricted_pod("restricted"))
    stored = core.read_namespaced_pod("restricted", ns)
    assert stored.spec.containers[0].security_context.capabilities.drop == ["ALL"]
    assert stored.metadata.namespace == ns


@pytest.mark.any_cluster
def test_the_refusal_is_pod_securitys_the_same_pod_passes_in_a_privileged_namespace(
    control_plane: ControlPlane,
) -> None:
    # Nothing else in the API server refuses the privileged pod: the namespace label alone decides.
    ns = namespace(control_plane, "privileged")
    core = client.CoreV1Api(control_plane.api_client())
    core.create_namespaced_pod(ns, privileged_pod("privileged"))
    assert core.read_namespaced_pod("privileged", ns).spec.containers[0].security_context.privileged is True


@pytest.mark.any_cluster
def test_restricted_namespace_names_every_missing_control(control_plane: ControlPlane) -> None:
    ns = namespace(control_plane, "restricted")
    core = client.CoreV1Api(control_plane.api_client())
    bare = restricted_pod("bare")
    bare["spec"].pop("securityContext")
    bare["spec"]["containers"][0].pop("securityContext")
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod(ns, bare)
    message = body(refused.value)["message"]
    assert refused.value.status == 403
    for control in ("allowPrivilegeEscalation != false", "unrestricted capabilities", "runAsNonRoot != true"):
        assert control in message
    assert "seccompProfile" in message


# --- InferenceService through the CRD ----------------------------------------------------------------------


@pytest.mark.any_cluster
def test_server_side_apply_stores_an_inference_service_with_its_field_manager(control_plane: ControlPlane) -> None:
    ns = namespace(control_plane, "restricted")
    isvcs = control_plane.dynamic().resources.get(api_version=ISVC_API, kind="InferenceService")
    wanted = inference_service("churn", ns)
    isvcs.server_side_apply(body=wanted, namespace=ns, field_manager=MANAGER)

    stored = isvcs.get(name="churn", namespace=ns).to_dict()
    assert stored["spec"] == wanted["spec"]
    assert stored["metadata"]["labels"] == {"hybridml.dev/version": "3"}
    managers = {(entry["manager"], entry["operation"]) for entry in stored["metadata"]["managedFields"]}
    assert managers == {(MANAGER, "Apply")}

    # Re-applying with a field dropped removes it: the manager owns exactly what it last applied.
    smaller = inference_service("churn", ns)
    del smaller["spec"]["predictor"]["maxReplicas"]
    isvcs.server_side_apply(body=smaller, namespace=ns, field_manager=MANAGER)
    assert "maxReplicas" not in isvcs.get(name="churn", namespace=ns).to_dict()["spec"]["predictor"]


@pytest.mark.any_cluster
def test_the_crd_schema_refuses_a_wrong_field_type_on_create(control_plane: ControlPlane) -> None:
    ns = namespace(control_plane, "restricted")
    custom = client.CustomObjectsApi(control_plane.api_client())
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(
            GROUP, "v1beta1", ns, "inferenceservices", inference_service("bad", ns, minReplicas="two")
        )
    status = body(refused.value)
    assert refused.value.status == 422
    assert status["reason"] == "Invalid"
    assert [cause["field"] for cause in status["details"]["causes"]] == ["spec.predictor.minReplicas"]
    assert 'must be of type integer: "string"' in status["details"]["causes"][0]["message"]
    assert custom.list_namespaced_custom_object(GROUP, "v1beta1", ns, "inferenceservices")["items"] == []


@pytest.mark.parametrize(
    ("predictor", "error"),
    [
        ({"minReplicas": "two"}, ".spec.predictor.minReplicas: expected numeric (int or float), got string"),
        ({"minReplica": 1}, ".spec.predictor.minReplica: field not declared in schema"),
    ],
    ids=["wrong-type", "unknown-field"],
)
def test_server_side_apply_refuses_what_the_crd_schema_does_not_allow_with_a_500(
    control_plane: ControlPlane, predictor: dict[str, Any], error: str
) -> None:
    # Server-side apply types the patch against the CRD schema before validation and, in this release, reports
    # the failure as 500 (kubernetes/kubernetes#139253, fix proposed in #139255). A client that retries 5xx
    # must not retry this one: it is the request that is wrong.
    ns = namespace(control_plane, "restricted")
    isvcs = control_plane.dynamic().resources.get(api_version=ISVC_API, kind="InferenceService")
    from kubernetes.dynamic.exceptions import InternalServerError, NotFoundError

    with pytest.raises(InternalServerError) as refused:
        isvcs.server_side_apply(body=inference_service("bad", ns, **predictor), namespace=ns, field_manager=MANAGER)
    status = json.loads(refused.value.body)
    assert refused.value.status == 500
    assert status["message"] == (
        f"failed to create typed patch object ({ns}/bad; {ISVC_API}, Kind=InferenceService): {error}"
    )
    with pytest.raises(NotFoundError):
        isvcs.get(name="bad", namespace=ns)


# --- RBAC with a ServiceAccount token ------------------------------------------------------------------------


def deployer_token(plane: ControlPlane, ns: str) -> str:
    """A token for ServiceAccount ``deployer`` in ``ns``, bound to a Role over InferenceServices only."""
    core = client.CoreV1Api(plane.api_client())
    rbac = client.RbacAuthorizationV1Api(plane.api_client())
    core.create_namespaced_service_account(ns, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="deployer")))
    rbac.create_namespaced_role(
        ns,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="deployer"),
            rules=[
                client.V1PolicyRule(
                    api_groups=["serving.kserve.io"],
                    resources=["inferenceservices"],
                    verbs=["get", "list", "watch", "create", "update", "patch", "delete"],
                )
            ],
        ),
    )
    rbac.create_namespaced_role_binding(
        ns,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="deployer"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="deployer"),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="deployer", namespace=ns)],
        ),
    )
    # The TokenRequest API: the API server signs a bound token with the service-account key it was given.
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600))
    token: str = core.create_namespaced_service_account_token("deployer", ns, request).status.token
    return token


@pytest.mark.any_cluster
def test_a_service_account_under_its_role_creates_inference_services_and_cannot_list_secrets(
    control_plane: ControlPlane,
) -> None:
    ns = namespace(control_plane, "restricted")
    token = deployer_token(control_plane, ns)
    user = f"system:serviceaccount:{ns}:deployer"

    isvcs = control_plane.dynamic(token).resources.get(api_version=ISVC_API, kind="InferenceService")
    isvcs.server_side_apply(body=inference_service("churn", ns), namespace=ns, field_manager=MANAGER)
    assert isvcs.get(name="churn", namespace=ns).metadata.name == "churn"

    core = client.CoreV1Api(control_plane.api_client(token))
    with pytest.raises(ApiException) as refused:
        core.list_namespaced_secret(ns)
    assert refused.value.status == 403
    assert body(refused.value)["message"] == (
        f'secrets is forbidden: User "{user}" cannot list resource "secrets" in API group "" in the namespace "{ns}"'
    )

    # The Role is namespaced: the same verb on InferenceServices elsewhere is refused too.
    other = namespace(control_plane, "restricted")
    from kubernetes.dynamic.exceptions import ForbiddenError

    with pytest.raises(ForbiddenError) as elsewhere:
        isvcs.server_side_apply(body=inference_service("churn", other), namespace=other, field_manager=MANAGER)
    assert elsewhere.value.status == 403
    assert f'User "{user}" cannot patch resource "inferenceservices"' in json.loads(elsewhere.value.body)["message"]


def test_the_static_deployer_token_has_no_rights_until_bound(control_plane: ControlPlane) -> None:
    core = client.CoreV1Api(control_plane.api_client(control_plane.deployer_token))
    with pytest.raises(ApiException) as refused:
        core.list_namespace()
    assert refused.value.status == 403
    assert body(refused.value)["message"].startswith('namespaces is forbidden: User "deployer" cannot list')


# --- Status subresource (playing KServe's controller) ------------------------------------------------------------


def test_the_status_subresource_is_writable_and_separate_from_spec(control_plane: ControlPlane) -> None:
    ns = namespace(control_plane, "restricted")
    custom = client.CustomObjectsApi(control_plane.api_client())
    isvcs = control_plane.dynamic().resources.get(api_version=ISVC_API, kind="InferenceService")
    isvcs.server_side_apply(body=inference_service("churn", ns), namespace=ns, field_manager=MANAGER)
    generation = isvcs.get(name="churn", namespace=ns).metadata.generation

    ready = {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
    status = {
        "observedGeneration": generation,
        "url": f"http://churn.{ns}.example.com",
        "conditions": [ready],
        "components": {"predictor": {"latestReadyRevision": "churn-predictor-00001"}},
        "modelStatus": {"states": {"activeModelState": "Loaded", "targetModelState": "Loaded"}},
    }
    # The spec change rides along on purpose: the status endpoint must ignore it.
    patch = {"spec": {"predictor": {"minReplicas": 5}}, "status": status}
    custom.patch_namespaced_custom_object_status(GROUP, "v1beta1", ns, "inferenceservices", "churn", patch)

    stored = isvcs.get(name="churn", namespace=ns).to_dict()
    # The CRD schema defaults modelStatus.transitionStatus; everything else is stored as written.
    assert stored["status"] == {**status, "modelStatus": {**status["modelStatus"], "transitionStatus": "UpToDate"}}
    assert stored["spec"]["predictor"]["minReplicas"] == 1
    assert stored["metadata"]["generation"] == generation

    # And the main endpoint ignores status: an apply that carries a status leaves the written one alone.
    with_status = inference_service("churn", ns)
    with_status["status"] = {"url": "http://elsewhere.example.com"}
    isvcs.server_side_apply(body=with_status, namespace=ns, field_manager=MANAGER)
    assert isvcs.get(name="churn", namespace=ns).to_dict()["status"]["url"] == status["url"]


def test_the_status_schema_refuses_a_wrong_type(control_plane: ControlPlane) -> None:
    ns = namespace(control_plane, "restricted")
    custom = client.CustomObjectsApi(control_plane.api_client())
    isvcs = control_plane.dynamic().resources.get(api_version=ISVC_API, kind="InferenceService")
    isvcs.server_side_apply(body=inference_service("churn", ns), namespace=ns, field_manager=MANAGER)
    with pytest.raises(ApiException) as refused:
        custom.patch_namespaced_custom_object_status(
            GROUP, "v1beta1", ns, "inferenceservices", "churn", {"status": {"observedGeneration": "one"}}
        )
    assert refused.value.status == 422
    assert "status.observedGeneration" in body(refused.value)["message"]
