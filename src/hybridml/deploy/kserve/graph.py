"""A/B routing on KServe: an InferenceGraph (``serving.kserve.io/v1alpha1``) whose root Splitter weighs two services.

:func:`inference_graph` renders the object (pure, validated); :class:`Graphs` applies, reads and deletes graphs
through a :class:`~hybridml.deploy.kserve.target.KServeTarget` (its namespace, field manager, server-side apply and
the same retry and error mapping); :func:`start` and :func:`stop` are what ``hybridml ab start|stop`` do.

Ownership follows the target's rule: a graph is labelled ``app.kubernetes.io/managed-by: hybridml`` and nothing
unlabelled is changed or deleted. Its ``hybridml.dev/ab`` annotation records, per variant, the model version, the
InferenceService serving it and whether ``start`` created that service, so that ``stop`` deletes the graph and only
the services ``start`` created (and only while they still serve that version alone).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from hybridml.core.naming import check_model_name
from hybridml.deploy.config import KServeConfig
from hybridml.deploy.contract import ModelRef
from hybridml.deploy.kserve import render
from hybridml.errors import ConflictError, HybridmlError, InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from hybridml.deploy.kserve.target import KServeTarget

GRAPH_API_VERSION = "v1alpha1"
GRAPH_API = f"{render.GROUP}/{GRAPH_API_VERSION}"
GRAPHS = "inferencegraphs"
ROOT = "root"
ANN_AB = "hybridml.dev/ab"
SELECTOR = f"{render.MANAGED_BY[0]}={render.MANAGED_BY[1]}"


@dataclass(frozen=True)
class Variant:
    """One arm of an A/B graph: the model version, the InferenceService serving it, and who created that service.

    Attributes:
        label: ``a`` or ``b`` (the Splitter step's name).
        model: registered model name.
        version: registered version.
        service: InferenceService the step routes to.
        weight: share of requests, percent.
        created: True when ``start`` deployed the service (``stop`` may delete it), False when it was reused.
    """

    label: str
    model: str
    version: str
    service: str
    weight: int
    created: bool


def check_weights(steps: Sequence[tuple[str, int]]) -> None:
    """Refuse a split that is not two or more distinct services with integer weights summing to 100.

    Raises:
        InvalidInputError: naming what is wrong (fewer than two steps, a service twice, a weight outside 1-99,
            a sum other than 100).
    """
    if len(steps) < 2:
        raise InvalidInputError(f"an A/B graph needs at least two services, got {len(steps)}")
    seen: set[str] = set()
    for service, weight in steps:
        if service in seen:
            raise InvalidInputError(f"service {service!r} appears twice in the split: A and B must differ")
        seen.add(service)
        if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= 99:
            raise InvalidInputError(f"weight of {service!r} must be an integer from 1 to 99, got {weight!r}")
    total = sum(weight for _, weight in steps)
    if total != 100:
        raise InvalidInputError(f"weights must sum to 100, got {total}")


def inference_graph(config: KServeConfig, name: str, variants: Sequence[Variant]) -> dict[str, Any]:
    """The InferenceGraph ``name``: a root ``Splitter`` node with one step per variant (``serviceName``, ``weight``).

    Raises:
        InvalidInputError: a bad graph name or a bad split (see :func:`check_weights`).
    """
    check_model_name(name)
    check_weights([(v.service, v.weight) for v in variants])
    steps = [{"name": v.label, "serviceName": v.service, "weight": v.weight} for v in variants]
    return {
        "apiVersion": GRAPH_API,
        "kind": "InferenceGraph",
        "metadata": {
            "name": name,
            "namespace": config.namespace,
            "labels": {render.MANAGED_BY[0]: render.MANAGED_BY[1]},
            "annotations": {ANN_AB: json.dumps([asdict(v) for v in variants], sort_keys=True)},
        },
        "spec": {"nodes": {ROOT: {"routerType": "Splitter", "steps": steps}}},
    }


@dataclass(frozen=True)
class Graph:
    """An A/B graph as stored: its variants, the URL KServe reports (empty until it reconciles) and readiness."""

    name: str
    variants: tuple[Variant, ...]
    url: str
    ready: bool


class Graphs:
    """InferenceGraphs of one :class:`KServeTarget`'s namespace (same client, field manager, retries, errors)."""

    def __init__(self, target: KServeTarget) -> None:
        self.target = target

    def apply(self, body: dict[str, Any]) -> Graph:
        """Server-side apply ``body`` (an existing graph must be this target's: else ConflictError)."""
        self.get(body["metadata"]["name"], missing_ok=True)
        return self._parse(self.target._apply(GRAPHS, body, version=GRAPH_API_VERSION))

    def get(self, name: str, *, missing_ok: bool = False) -> Graph | None:
        """The graph ``name`` if this target created it; None when missing and ``missing_ok``.

        Raises:
            NotFoundError: no such graph (and not ``missing_ok``).
            ConflictError: a graph of that name exists without the managed-by label.
        """
        check_model_name(name)
        target = self.target
        try:
            obj = target._call(
                "get", GRAPHS, target._custom.get_namespaced_custom_object,
                render.GROUP, GRAPH_API_VERSION, target.config.namespace, GRAPHS, name,
            )  # fmt: skip
        except NotFoundError:
            if missing_ok:
                return None
            raise NotFoundError(f"no A/B graph {name!r} in namespace {target.config.namespace!r}") from None
        labels = obj.get("metadata", {}).get("labels") or {}
        if labels.get(render.MANAGED_BY[0]) != render.MANAGED_BY[1]:
            raise ConflictError(
                f"InferenceGraph {target.config.namespace}/{name} exists but was not created by hybridml"
                f" (no label {SELECTOR})"
            )
        return self._parse(obj)

    def delete(self, name: str) -> Graph:
        """Delete the graph ``name`` (only one this target created); returns it as it was."""
        graph = self.get(name)
        assert graph is not None
        target = self.target
        target._call(
            "delete", GRAPHS, target._custom.delete_namespaced_custom_object,
            render.GROUP, GRAPH_API_VERSION, target.config.namespace, GRAPHS, name,
        )  # fmt: skip
        return graph

    @staticmethod
    def _parse(obj: dict[str, Any]) -> Graph:
        meta, status = obj["metadata"], obj.get("status") or {}
        raw = json.loads((meta.get("annotations") or {}).get(ANN_AB) or "[]")
        variants = tuple(Variant(**{**item, "version": str(item["version"])}) for item in raw)
        condition: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
        ready = condition.get("status") == "True" and status.get("observedGeneration") == meta.get("generation")
        return Graph(meta["name"], variants, status.get("url") or "", ready)


def _service_for(target: KServeTarget, ref: ModelRef, taken: set[str]) -> tuple[str, bool]:
    """The InferenceService to route ``ref`` to, and whether it must be deployed.

    Reused: ``NAME`` (else ``NAME-vVERSION``) when it serves exactly this version, with no canary. Deployed:
    ``NAME`` when it does not exist, else ``NAME-vVERSION`` (``NAME`` serves something else, which stays as is).
    A name in ``taken`` (chosen for the other variant) is skipped.
    """
    candidates = [ref.name, check_model_name(f"{ref.name}-v{ref.version}")]
    for index, service in enumerate(candidates):
        if service in taken:
            continue
        try:
            live = target.status(service)
        except NotFoundError:
            return service, True
        if live.stable_version == ref.version and live.canary_version is None:
            return service, False
        if index == 1:
            raise ConflictError(
                f"InferenceService {service!r} serves {live.stable_version}"
                + (f" with canary {live.canary_version}" if live.canary_version else "")
                + f", not {ref.name}/{ref.version} alone: delete it or pick another version"
            )
    raise AssertionError("unreachable")  # pragma: no cover


def start(target: KServeTarget, name: str, a: ModelRef, b: ModelRef, split: int) -> Graph:
    """Route ``100 - split`` % of requests to ``a`` and ``split`` % to ``b`` through the InferenceGraph ``name``.

    Each variant's InferenceService is reused when it already serves that version alone, else deployed (and
    waited for) as :func:`_service_for` says; then the graph is applied. Starting again with the same variants
    re-weights the graph (services it created stay marked as created).

    Raises:
        InvalidInputError: ``split`` outside 1-99, ``a`` and ``b`` the same version, a bad graph name.
        ConflictError: a graph or service of that name not created by hybridml; a changed variant on a graph
            that already runs (stop it first).
        NotReadyError: a variant's service did not become Ready (the graph is not applied).
    """
    check_model_name(name)
    if isinstance(split, bool) or not isinstance(split, int) or not 1 <= split <= 99:
        raise InvalidInputError(f"--split is B's share of requests and must be 1-99, got {split!r}")
    if (a.name, str(a.version)) == (b.name, str(b.version)):
        raise InvalidInputError(f"A and B are the same version {a.name}/{a.version}: compare two versions")
    graphs = Graphs(target)
    existing = graphs.get(name, missing_ok=True)
    chosen: list[Variant] = []
    for label, ref, weight in (("a", a, 100 - split), ("b", b, split)):
        previous = next((v for v in existing.variants if v.label == label), None) if existing else None
        if existing is not None and (previous is None or (previous.model, previous.version) != (ref.name, ref.version)):
            raise ConflictError(
                f"A/B graph {name!r} already compares other versions: stop it first (hybridml ab stop --name {name})"
            )
        if previous is not None:
            chosen.append(replace(previous, weight=weight))
            continue
        service, deploy = _service_for(target, ref, {v.service for v in chosen})
        chosen.append(Variant(label, ref.name, str(ref.version), service, weight, deploy))
    if name in {v.service for v in chosen}:
        raise InvalidInputError(f"graph {name!r} has the name of a variant's InferenceService: name it otherwise")
    body = inference_graph(target.config, name, chosen)  # validated before anything is deployed
    done: list[str] = []
    for variant, ref in zip(chosen, (a, b), strict=True):
        if variant.created and existing is None:
            try:
                target.deploy(ref, service=variant.service)
            except HybridmlError as exc:
                for service in done:  # nothing half-started: the graph is not applied, A's new service goes
                    target.delete(service)
                left = f"; deleted {', '.join(done)}" if done else ""
                raise type(exc)(f"ab start {name!r}: {exc}{left}") from exc
            done.append(variant.service)
    return graphs.apply(body)


@dataclass(frozen=True)
class Stopped:
    """What :func:`stop` did: the graph deleted, services deleted, services kept (with why)."""

    graph: Graph
    deleted_services: tuple[str, ...]
    kept_services: tuple[str, ...]
    kept_why: tuple[str, ...]


def stop(target: KServeTarget, name: str) -> Stopped:
    """Delete the graph ``name`` and the services its ``start`` created, if they still serve that version alone.

    A reused service is kept; so is a created one that has changed since (another version, a canary) or is gone.
    """
    graph = Graphs(target).delete(name)
    deleted, kept, why = [], [], []
    for variant in graph.variants:
        if not variant.created:
            kept.append(variant.service)
            why.append(f"{variant.service}: reused, not created by ab start")
            continue
        try:
            live = target.status(variant.service)
        except NotFoundError:
            why.append(f"{variant.service}: already gone")
            continue
        if live.stable_version != variant.version or live.canary_version is not None:
            kept.append(variant.service)
            why.append(f"{variant.service}: changed since ab start (serves {live.stable_version})")
            continue
        target.delete(variant.service)
        deleted.append(variant.service)
    return Stopped(graph, tuple(deleted), tuple(kept), tuple(why))


def as_dict(item: Graph | Stopped) -> dict[str, Any]:
    """A JSON-ready view of a graph or a stop result."""
    return asdict(item)
