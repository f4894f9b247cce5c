"""kwok plays the kubelet: Pods bound to its fake Node become Running and Ready, and Deployments Available.

Nothing runs in the Pods (no container runtime); kwok writes their status as a kubelet would. Pods reach the
Node either by naming it (``spec.nodeName``) or through kube-scheduler.
"""

from __future__ import annotations

import ipaddress
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from tests.integration.k8s.conftest import POD_CIDR
from tests.integration.k8s.test_control_plane import namespace, restricted_pod
from tests.integration.k8s.test_controller_manager import eventually

if TYPE_CHECKING:
    from tests.integration.k8s.conftest import ControlPlane

pytestmark = pytest.mark.integration

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client  # noqa: E402


def test_a_restricted_pod_on_the_fake_node_becomes_running_and_ready(
    control_plane: ControlPlane, kwok_node: str
) -> None:
    ns = namespace(control_plane, "restricted")
    core = client.CoreV1Api(control_plane.api_client())
    pod = restricted_pod("predictor")
    pod["spec"]["nodeName"] = kwok_node
    core.create_namespaced_pod(ns, pod)

    def running() -> Any:
        status = core.read_namespaced_pod("predictor", ns).status
        ready = any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])
        return status if status.phase == "Running" and ready else None

    status = eventually(running)
    assert ipaddress.ip_address(status.pod_ip) in ipaddress.ip_network(POD_CIDR)
    assert [c.name for c in status.container_statuses if c.ready] == ["predictor"]


def deploy_and_wait_available(plane: ControlPlane, template: dict[str, Any]) -> tuple[str, str]:
    """Create a 2-replica Deployment of ``template`` in a restricted namespace; wait until it is Available."""
    ns = namespace(plane, "restricted")
    apps = client.AppsV1Api(plane.api_client())
    name = f"predictor-{uuid.uuid4().hex[:4]}"
    labels = {"app": name}
    apps.create_namespaced_deployment(
        ns,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": template["spec"]},
            },
        },
    )

    def available() -> Any:
        status = apps.read_namespaced_deployment(name, ns).status
        ok = any(c.type == "Available" and c.status == "True" for c in status.conditions or [])
        return status if ok and status.ready_replicas == 2 else None

    status = eventually(available)
    assert (status.replicas, status.ready_replicas, status.available_replicas, status.updated_replicas) == (2, 2, 2, 2)
    return ns, name


def test_a_deployment_naming_the_fake_node_becomes_available(controller_manager: ControlPlane, kwok_node: str) -> None:
    template = restricted_pod("unused")
    template["spec"]["nodeName"] = kwok_node
    deploy_and_wait_available(controller_manager, template)


def test_the_scheduler_places_a_deployments_pods_on_the_fake_node(
    controller_manager: ControlPlane, scheduler: ControlPlane, kwok_node: str
) -> None:
    ns, name = deploy_and_wait_available(controller_manager, restricted_pod("unused"))
    pods = client.CoreV1Api(controller_manager.api_client()).list_namespaced_pod(ns, label_selector=f"app={name}")
    assert [pod.spec.node_name for pod in pods.items] == [kwok_node, kwok_node]
