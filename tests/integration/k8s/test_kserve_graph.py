"""A/B routing with a KServe InferenceGraph (``hybridml.deploy.kserve.graph``) against the real kube-apiserver.

The InferenceGraph CRD from ../shared/crds is installed in the test API server, so its schema validation is
real; nothing reconciles graphs (no KServe controller), so a graph's status stays empty. The InferenceServices
under a graph are reconciled by the test's playing controller, as in test_kserve_target.py.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from hybridml.deploy.kserve import graph
from hybridml.deploy.kserve.graph import Graphs, Variant
from hybridml.errors import ConflictError, InvalidInputError, NotFoundError, NotReadyError, PermissionDeniedError

if TYPE_CHECKING:
    from tests.integration.k8s.conftest import ControlPlane

pytestmark = pytest.mark.integration

kubernetes = pytest.importorskip("kubernetes")
from kubernetes.client.exceptions import ApiException  # noqa: E402

from tests.integration.k8s.kserve_bed import make_namespace  # noqa: E402
from tests.integration.k8s.test_kserve_target import Bed, bind_shipped_roles, ref  # noqa: E402

GROUP, GRAPH_VERSION, GRAPHS = "serving.kserve.io", "v1alpha1", "inferencegraphs"


def graphs(bed: Bed) -> dict[str, dict[str, Any]]:
    items = bed.custom.list_namespaced_custom_object(GROUP, GRAPH_VERSION, bed.ns, GRAPHS)["items"]
    return {item["metadata"]["name"]: item for item in items}


def variant(label: str, service: str, weight: int, version: str = "1", created: bool = True) -> Variant:
    return Variant(label, "churn", version, service, weight, created)


@pytest.fixture
def bed(control_plane: ControlPlane) -> Bed:
    return Bed(control_plane)


def test_start_deploys_both_versions_and_applies_the_exact_splitter_graph(bed: Bed) -> None:
    started = graph.start(bed.target, "churn-ab", ref("1"), ref("2"), 30)
    a = Variant("a", "churn", "1", "churn", 70, True)
    b = Variant("b", "churn", "2", "churn-v2", 30, True)
    assert started == graph.Graph("churn-ab", (a, b), "", False)  # nothing reconciles graphs here
    stored = graphs(bed)["churn-ab"]
    assert stored["apiVersion"] == "serving.kserve.io/v1alpha1" and stored["kind"] == "InferenceGraph"
    assert stored["spec"] == {
        "nodes": {
            "root": {
                "routerType": "Splitter",
                "steps": [
                    {"name": "a", "serviceName": "churn", "weight": 70},
                    {"name": "b", "serviceName": "churn-v2", "weight": 30},
                ],
            }
        }
    }
    assert stored["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "hybridml"}
    assert json.loads(stored["metadata"]["annotations"]["hybridml.dev/ab"]) == [
        {"label": "a", "model": "churn", "version": "1", "service": "churn", "weight": 70, "created": True},
        {"label": "b", "model": "churn", "version": "2", "service": "churn-v2", "weight": 30, "created": True},
    ]
    managers = {(e["manager"], e["operation"]) for e in stored["metadata"]["managedFields"]}
    assert managers == {("hybridml", "Apply")}
    assert bed.names() == ["churn", "churn-v2"]
    # Each variant is served alone, from the model's own storage (not the service's name).
    assert bed.stored("churn")["spec"]["predictor"]["model"]["storageUri"] == "s3://models/churn/1"
    assert bed.stored("churn-v2")["spec"]["predictor"]["model"]["storageUri"] == "s3://models/churn/2"
    assert "canary" not in bed.stored("churn-v2")["spec"]
    assert Graphs(bed.target).get("churn-ab") == started


def test_stop_deletes_the_graph_and_only_the_services_start_created(bed: Bed) -> None:
    bed.target.deploy(ref("1"))  # A already serves: reused, so kept by stop
    started = graph.start(bed.target, "churn-ab", ref("1"), ref("2"), 50)
    assert [(v.service, v.created) for v in started.variants] == [("churn", False), ("churn-v2", True)]
    assert bed.names() == ["churn", "churn-v2"]
    other = graph.start(bed.target, "other-ab", ref("1"), ref("2"), 10)  # reuses both services
    assert [(v.service, v.created) for v in other.variants] == [("churn", False), ("churn-v2", False)]

    stopped = graph.stop(bed.target, "churn-ab")
    assert stopped.deleted_services == ("churn-v2",)
    assert stopped.kept_services == ("churn",)
    assert stopped.kept_why == ("churn: reused, not created by ab start",)
    assert sorted(graphs(bed)) == ["other-ab"]
    assert bed.names() == ["churn"]
    with pytest.raises(NotFoundError, match=f"^no A/B graph 'churn-ab' in namespace '{bed.ns}'$"):
        graph.stop(bed.target, "churn-ab")


def test_stop_keeps_a_created_service_that_changed_since(bed: Bed) -> None:
    graph.start(bed.target, "churn-ab", ref("1"), ref("2"), 50)
    bed.target.deploy(ref("3"), traffic_percent=10, service="churn-v2")
    stopped = graph.stop(bed.target, "churn-ab")
    assert (stopped.deleted_services, stopped.kept_services) == (("churn",), ("churn-v2",))
    assert stopped.kept_why == ("churn-v2: changed since ab start (serves 2)",)
    assert bed.names() == ["churn-v2"] and graphs(bed) == {}


def test_a_graph_not_created_by_hybridml_is_neither_changed_nor_deleted(bed: Bed) -> None:
    foreign = graph.inference_graph(bed.config(), "churn-ab", [variant("a", "x", 50), variant("b", "y", 50)])
    foreign["metadata"]["labels"] = {"team": "other"}
    bed.custom.create_namespaced_custom_object(GROUP, GRAPH_VERSION, bed.ns, GRAPHS, foreign)
    where = f"InferenceGraph {bed.ns}/churn-ab exists but was not created by hybridml"
    with pytest.raises(ConflictError, match=f"^{where}"):
        graph.start(bed.target, "churn-ab", ref("1"), ref("2"), 50)
    with pytest.raises(ConflictError, match=f"^{where}"):
        graph.stop(bed.target, "churn-ab")
    assert graphs(bed)["churn-ab"]["spec"] == foreign["spec"]
    assert bed.names() == []  # refused before any service was deployed


def test_starting_again_reweights_and_other_versions_are_refused(bed: Bed) -> None:
    graph.start(bed.target, "churn-ab", ref("1"), ref("2"), 50)
    again = graph.start(bed.target, "churn-ab", ref("1"), ref("2"), 20)
    assert [(v.service, v.weight, v.created) for v in again.variants] == [
        ("churn", 80, True),
        ("churn-v2", 20, True),
    ]
    steps = graphs(bed)["churn-ab"]["spec"]["nodes"]["root"]["steps"]
    assert [s["weight"] for s in steps] == [80, 20]
    with pytest.raises(ConflictError, match="already compares other versions: stop it first"):
        graph.start(bed.target, "churn-ab", ref("1"), ref("3"), 20)
    assert bed.names() == ["churn", "churn-v2"]


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([("a", 50), ("b", 40)], "^weights must sum to 100, got 90$"),
        ([("a", 60), ("b", 60)], "^weights must sum to 100, got 120$"),
        ([("a", 50), ("a", 50)], "^service 'a' appears twice in the split: A and B must differ$"),
        ([("a", 100), ("b", 0)], "^weight of 'a' must be an integer from 1 to 99, got 100$"),
        ([("a", 0), ("b", 100)], "^weight of 'a' must be an integer from 1 to 99, got 0$"),
        ([("a", 100)], "^an A/B graph needs at least two services, got 1$"),
    ],
)
def test_weights_are_checked(steps: list[tuple[str, int]], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        graph.check_weights(steps)


def test_bad_splits_and_names_are_refused_before_anything_is_applied(bed: Bed) -> None:
    for split in (0, 100, -5):
        with pytest.raises(
            InvalidInputError, match=f"^--split is B's share of requests and must be 1-99, got {split}$"
        ):
            graph.start(bed.target, "churn-ab", ref("1"), ref("2"), split)
    with pytest.raises(InvalidInputError, match=r"^A and B are the same version churn/1: compare two versions$"):
        graph.start(bed.target, "churn-ab", ref("1"), ref("1"), 50)
    with pytest.raises(InvalidInputError, match="has the name of a variant's InferenceService"):
        graph.start(bed.target, "churn", ref("1"), ref("2"), 50)
    with pytest.raises(InvalidInputError, match="appears twice"):
        graph.inference_graph(bed.config(), "churn-ab", [variant("a", "churn", 50), variant("b", "churn", 50)])
    assert bed.names() == [] and graphs(bed) == {}


def test_a_variant_that_never_becomes_ready_leaves_nothing_behind(bed: Bed) -> None:
    bed.controller.broken.add("churn-v2")
    with pytest.raises(NotReadyError) as failed:
        graph.start(bed.target, "churn-ab", ref("1"), ref("2"), 50)
    message = str(failed.value)
    assert message.startswith("ab start 'churn-ab': ")
    assert f"deleted InferenceService {bed.ns}/churn-v2" in message
    assert message.endswith("; deleted churn")
    assert bed.names() == [] and graphs(bed) == {}


def test_the_api_servers_schema_accepts_the_graph_and_refuses_a_wrong_one(bed: Bed) -> None:
    body = graph.inference_graph(bed.config(), "churn-ab", [variant("a", "x", 50), variant("b", "y", 50)])
    bed.custom.create_namespaced_custom_object(GROUP, GRAPH_VERSION, bed.ns, GRAPHS, body, dry_run="All")
    # The same object with a step the schema refuses: the validation above is the server's and can fail.
    wrong = json.loads(json.dumps(body))
    wrong["spec"]["nodes"]["root"]["routerType"] = "Split"
    wrong["spec"]["nodes"]["root"]["steps"][0]["weight"] = "fifty"
    with pytest.raises(ApiException) as refused:
        bed.custom.create_namespaced_custom_object(GROUP, GRAPH_VERSION, bed.ns, GRAPHS, wrong, dry_run="All")
    assert refused.value.status == 422
    reason = json.loads(refused.value.body)["message"]
    assert 'spec.nodes.root.routerType: Unsupported value: "Split"' in reason
    assert 'spec.nodes.root.steps[0].weight: Invalid value: "string"' in reason


def test_the_shipped_role_allows_start_and_stop_and_nothing_outside_it(control_plane: ControlPlane) -> None:
    bed = Bed(control_plane)
    token = bind_shipped_roles(control_plane, bed.ns, bed.kserve_ns)
    target = bed.make(token)
    started = graph.start(target, "churn-ab", ref("1"), ref("2"), 40)
    assert [v.weight for v in started.variants] == [60, 40]
    assert graph.stop(target, "churn-ab").deleted_services == ("churn", "churn-v2")
    assert graphs(bed) == {} and bed.names() == []

    other = make_namespace(control_plane)
    with pytest.raises(PermissionDeniedError) as refused:
        Graphs(bed.make(token, namespace=other)).get("churn-ab")
    user = f"system:serviceaccount:{bed.ns}:deployer"
    assert str(refused.value) == (
        f"not allowed to get inferencegraphs in namespace {other!r}: inferencegraphs.serving.kserve.io"
        f' "churn-ab" is forbidden: User "{user}" cannot get resource "inferencegraphs" in API group'
        f' "serving.kserve.io" in the namespace "{other}"'
    )
