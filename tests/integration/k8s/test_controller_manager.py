"""With kube-controller-manager running, Deployments become ReplicaSets and Pods, admitted by Pod Security.

The Pods the ReplicaSet controller creates go through the same admission as any client's: in a namespace
enforcing ``restricted`` a compliant template yields Pods, a privileged one yields none and a ReplicaFailure
condition naming the PodSecurity violation. No scheduler or kubelet runs, so the Pods stay Pending.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from tests.integration.k8s.test_control_plane import privileged_pod, restricted_pod

if TYPE_CHECKING:
    from tests.integration.k8s.conftest import ControlPlane

pytestmark = pytest.mark.integration

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client  # noqa: E402


def eventually(probe: Callable[[], Any], timeout: float = 60.0) -> Any:
    """``probe()``'s first truthy answer; fails after ``timeout`` seconds (a bound, not a measured time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = probe()
        if answer:
            return answer
        time.sleep(0.2)
    pytest.fail(f"no answer from {probe.__name__} within {timeout}s")


def restricted_namespace(plane: ControlPlane) -> str:
    name = f"kcm-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(plane.api_client())
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)))
    return name


def deployment(name: str, pod: dict[str, Any]) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod["spec"]},
        },
    }


def test_the_serviceaccount_controller_gives_a_new_namespace_its_default_account(
    controller_manager: ControlPlane,
) -> None:
    ns = restricted_namespace(controller_manager)
    core = client.CoreV1Api(controller_manager.api_client())

    def default_account() -> bool:
        return any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(ns).items)

    eventually(default_account)
    # The root-ca-cert-publisher publishes the cluster CA for in-cluster clients.
    root_ca = eventually(
        lambda: core.list_namespaced_config_map(ns, field_selector="metadata.name=kube-root-ca.crt").items
    )
    assert root_ca[0].data["ca.crt"] == controller_manager.ca_file.read_text()


def test_a_restricted_deployment_becomes_a_replicaset_and_pending_pods(controller_manager: ControlPlane) -> None:
    ns = restricted_namespace(controller_manager)
    apps = client.AppsV1Api(controller_manager.api_client())
    core = client.CoreV1Api(controller_manager.api_client())
    apps.create_namespaced_deployment(ns, deployment("predictor", restricted_pod("unused")))

    def two_pods() -> list[Any] | None:
        items: list[Any] = core.list_namespaced_pod(ns).items
        return items if len(items) == 2 else None

    pods = eventually(two_pods)
    replica_sets = apps.list_namespaced_replica_set(ns).items
    assert len(replica_sets) == 1
    assert replica_sets[0].metadata.owner_references[0].name == "predictor"
    assert {p.metadata.owner_references[0].name for p in pods} == {replica_sets[0].metadata.name}
    assert {p.status.phase for p in pods} == {"Pending"}


def test_a_privileged_deployment_gets_no_pods_and_says_why(controller_manager: ControlPlane) -> None:
    ns = restricted_namespace(controller_manager)
    apps = client.AppsV1Api(controller_manager.api_client())
    core = client.CoreV1Api(controller_manager.api_client())
    apps.create_namespaced_deployment(ns, deployment("predictor", privileged_pod("unused")))

    def replica_failure() -> Any:
        for replica_set in apps.list_namespaced_replica_set(ns).items:
            for condition in replica_set.status.conditions or []:
                if condition.type == "ReplicaFailure":
                    return condition
        return None

    condition = eventually(replica_failure)
    assert condition.status == "True"
    assert condition.reason == "FailedCreate"
    assert 'violates PodSecurity "restricted:latest": privileged' in condition.message
    assert core.list_namespaced_pod(ns).items == []
