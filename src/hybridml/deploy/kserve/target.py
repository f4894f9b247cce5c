"""The KServe target: one InferenceService per deployment, applied server-side through the Kubernetes API.

The cluster is the state. Each deployment is an InferenceService labelled ``app.kubernetes.io/managed-by:
hybridml``; its annotations record the stable (and canary) version with its ``storageUri``, so that promote and
rollback re-render the object from what is stored. Objects without the label are never read as deployments,
changed or deleted. The ``hybridml`` ServingRuntime is applied beside them and shared (never deleted).
"""

from __future__ import annotations

import builtins
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hybridml.core.naming import check_model_name
from hybridml.deploy.config import KServeConfig
from hybridml.deploy.contract import (
    Deployment,
    DeployTarget,
    ModelRef,
    check_rows,
    check_split_percent,
    check_traffic_percent,
)
from hybridml.deploy.kserve import render
from hybridml.deploy.kserve.render import Served
from hybridml.errors import (
    ConflictError,
    HybridmlError,
    InvalidInputError,
    NotFoundError,
    NotReadyError,
    PermissionDeniedError,
)

GROUP, VERSION, PLURAL = render.GROUP, "v1beta1", "inferenceservices"
RUNTIMES = "servingruntimes"
KSERVE_CONFIGMAP = "inferenceservice-config"
# Standard mode: KServe's Deployment of the stable predictor, and the pod template annotation where KServe puts the
# predictor's storageUri (its storage initializer reads it).
PREDICTOR_SUFFIX = "-predictor"
SOURCE_URI = "internal.serving.kserve.io/storage-initializer-sourceuri"
SELECTOR = f"{render.MANAGED_BY[0]}={render.MANAGED_BY[1]}"
# What is worth retrying is what the status code says (the server or a proxy in front of it was busy or
# down), never the message. A 500 on apply is not retried: server-side apply reports a patch that does not
# type against the CRD schema as 500 (kubernetes/kubernetes#139253), and that request would fail again.
# How the API server words a validating or mutating webhook's denial (HTTP 403, like RBAC's).
WEBHOOK_DENIAL = "admission webhook "
RETRIED = frozenset({429, 500, 502, 503, 504})
FIRST_RETRY_S = 0.2


def load_api_client(config: KServeConfig) -> Any:
    """A ``kubernetes.client.ApiClient``: ``config.kubeconfig``, else in-cluster, else the default kubeconfig.

    Raises:
        InvalidInputError: none of them is there (or the kubeconfig is unreadable), naming what was tried.
    """
    from kubernetes import client
    from kubernetes import config as kube_config

    try:
        if config.kubeconfig is not None:
            return kube_config.new_client_from_config(config_file=config.kubeconfig, context=config.context)
        try:
            kube_config.load_incluster_config()
            return client.ApiClient()
        except kube_config.ConfigException:
            # KUBECONFIG is read now, not by the library: it reads it once, at import, which a warm process (the
            # daemon, the pipeline's step zygote) did before this command's or step's environment was in place.
            default = os.environ.get("KUBECONFIG") or "~/.kube/config"
            return kube_config.new_client_from_config(config_file=default, context=config.context)
    except (kube_config.ConfigException, OSError) as exc:
        tried = config.kubeconfig or "in-cluster config, KUBECONFIG or ~/.kube/config"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidInputError(f"kserve target: no usable Kubernetes configuration ({tried}): {first}") from exc


@dataclass(frozen=True)
class _Live:
    """An InferenceService of this target as stored: the object and what its annotations say it serves."""

    obj: dict[str, Any]
    mode: str
    stable: Served
    canary: Served | None
    canary_percent: int
    features: tuple[str, ...]


class KServeTarget(DeployTarget):
    """Serve deployments as KServe InferenceServices (see the module docstring and docs/kserve.md).

    * :meth:`deploy` detects the deployment mode (``config.mode``; else the object's
      ``serving.kserve.io/deploymentMode`` annotation or ``status.deploymentMode``; else KServe's
      ``inferenceservice-config`` ConfigMap) and renders the canary in that mode's form: ``spec.canary[]``
      with ``trafficPercent`` in Standard mode, ``spec.predictor.canaryTrafficPercent`` in Serverless mode.
      A mode it cannot tell, or ModelMesh, is refused before anything is applied.
    * Every change is a server-side apply with ``config.field_manager`` and ``force=False``: a field another
      manager owns is a ConflictError, never overwritten. Each change then waits up to
      ``config.ready_timeout_s`` for Ready; when the budget runs out the previous spec is applied again (or a
      new object deleted) and NotReadyError says what is left in the cluster.
    * Ready means: KServe observed the current generation, the ``Ready`` condition is True, the canary is ready
      (``canaryStatuses`` in Standard mode, the latest revision in Serverless mode) and no model failed to load.
      In Standard mode the stable predictor's Deployment (``NAME-predictor``) must also have rolled out the
      stable version: its pod template carries that version and ``storageUri``, and its rollout is complete.
    * API errors: 403 is a PermissionDeniedError naming the verb and resource, except an admission webhook's
      denial (KServe's validator: ``admission webhook "..." denied the request: REASON``), which is an
      InvalidInputError like 422; 409 a ConflictError; 429 and 5xx are retried with exponential backoff
      (``config.max_attempts``).
    * KServe's InferenceService has no request mirroring: :meth:`shadow` is refused.

    Args:
        config: namespace, image, runtime, resources, autoscaling, budgets.
        api_client: a ``kubernetes.client.ApiClient`` (default: from ``config``, see :func:`load_api_client`).
        clock: monotonic clock, injectable for tests.
        sleep: sleep function (polls and retry backoff), injectable for tests.
    """

    target_name = "kserve"

    def __init__(
        self,
        config: KServeConfig,
        *,
        api_client: Any = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(clock=clock, sleep=sleep)
        from kubernetes import client

        self.config = config
        self.api_client = api_client if api_client is not None else load_api_client(config)
        self._custom = client.CustomObjectsApi(self.api_client)
        self._core = client.CoreV1Api(self.api_client)
        self._apps = client.AppsV1Api(self.api_client)

    # ----- the contract -----

    def deploy(self, ref: ModelRef, traffic_percent: int = 100, *, service: str | None = None) -> Deployment:
        """Apply ``ref`` as stable (100: drops any canary) or as the canary at ``traffic_percent``, then wait.

        ``service`` names the InferenceService (default: the model's name; A/B graphs serve two versions of one
        model from two services). ``storageUri`` still comes from the model's name and version.
        """
        name = check_model_name(service or ref.name)
        check_traffic_percent(traffic_percent)
        served = Served(str(ref.version), render.storage_uri(self.config, ref), ref.pipeline_run_id)
        current = self._read(name, missing_ok=True)
        mode = self._mode(name, current)
        features = tuple(ref.schema.names)
        if traffic_percent == 100:
            body = render.inference_service(self.config, name, mode, served, features=features)
        else:
            if current is None:
                raise InvalidInputError(
                    f"cannot deploy {served.version!r} as a canary: {name!r} has no stable version yet"
                    " (deploy it at 100%)"
                )
            if current.features and current.features != features:
                raise InvalidInputError(
                    f"canary {served.version!r} of {name!r} has different features than stable"
                    f" {current.stable.version!r}"
                )
            body = render.inference_service(
                self.config, name, mode, current.stable, served, traffic_percent, features=features
            )
        if self.config.runtime == render.MODEL_FORMAT:
            self._ensure_runtime()
        return self._change(name, body, current)

    def _ensure_runtime(self) -> None:
        """Create the project's ServingRuntime where the namespace has none; an existing one is left as it is.

        The chart and the kustomize base install their own (a read-only root, the control listener and its token),
        owned by another field manager: applying ours over it would conflict, or undo their settings.
        """
        try:
            self._call(
                "get", RUNTIMES, self._custom.get_namespaced_custom_object,
                GROUP, "v1alpha1", self._ns, RUNTIMES, self.config.runtime,
            )  # fmt: skip
        except NotFoundError:
            self._apply(RUNTIMES, render.serving_runtime(self.config), version="v1alpha1")

    def set_traffic(self, name: str, percent: int) -> Deployment:
        """Give the canary ``percent`` of requests (re-applied with the same versions), then wait."""
        check_split_percent(percent)
        live = self._read(name)
        if live.canary is None:
            raise ConflictError(f"deployment {name!r} has no canary to send traffic to")
        return self._change(name, self._render(name, live, live.stable, live.canary, percent), live)

    def shadow(self, name: str, ref: ModelRef | None) -> Deployment:
        """Refused: an InferenceService has no request mirroring (the local target's shadow has no KServe form)."""
        self._read(name)
        raise InvalidInputError(
            "the kserve target has no shadow: KServe InferenceServices do not mirror requests (use the local target)"
        )

    def status(self, name: str) -> Deployment:
        """The deployment as KServe reports it now (no waiting)."""
        return self._deployment(self._read(name))

    def promote(self, name: str) -> Deployment:
        """Make the canary the stable version at 100 %, then wait."""
        live = self._read(name)
        if live.canary is None:
            raise ConflictError(f"deployment {name!r} has no canary to promote")
        return self._change(name, self._render(name, live, live.canary), live)

    def rollback(self, name: str) -> Deployment:
        """Drop the canary: stable (the last version that was Ready at 100 %) answers everything, then wait."""
        live = self._read(name)
        if live.canary is None:
            raise ConflictError(f"deployment {name!r} has no canary to roll back")
        return self._change(name, self._render(name, live, live.stable), live)

    def delete(self, name: str) -> None:
        """Delete the InferenceService of ``name`` (only one this target created: labelled managed-by hybridml)."""
        self._read(name)
        self._call(
            "delete", PLURAL, self._custom.delete_namespaced_custom_object, GROUP, VERSION, self._ns, PLURAL, name
        )

    def list(self) -> builtins.list[Deployment]:
        """The InferenceServices of this target in the namespace, sorted by name."""
        raw = self._call(
            "list",
            PLURAL,
            self._custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self._ns,
            PLURAL,
            label_selector=SELECTOR,
        )
        lives = [self._parse(item) for item in raw.get("items", [])]
        return sorted((self._deployment(live) for live in lives), key=lambda d: d.name)

    def invoke(self, name: str, rows: Sequence[Mapping[str, Any]], protocol: str = "v2") -> builtins.list[float]:
        """Score ``rows`` over HTTP at the InferenceService's status URL (needs KServe's data plane running)."""
        check_rows(rows, protocol)
        deployment = self.status(name)
        if not deployment.ready:
            raise NotReadyError(f"deployment {name!r} is not ready: {deployment.detail}")
        from hybridml.serving.client import predict

        return predict(deployment.endpoint, name, rows, protocol=protocol)

    # ----- reading -----

    @property
    def _ns(self) -> str:
        return self.config.namespace

    def _read(self, name: str, *, missing_ok: bool = False) -> Any:
        check_model_name(name)
        try:
            obj = self._call(
                "get", PLURAL, self._custom.get_namespaced_custom_object, GROUP, VERSION, self._ns, PLURAL, name
            )
        except NotFoundError:
            obj = None
        labels = (obj or {}).get("metadata", {}).get("labels") or {}
        if obj is None or labels.get(render.MANAGED_BY[0]) != render.MANAGED_BY[1]:
            if missing_ok and obj is None:
                return None
            if obj is not None:
                raise ConflictError(
                    f"InferenceService {self._ns}/{name} exists but was not created by hybridml (no label {SELECTOR})"
                )
            raise NotFoundError(f"no kserve deployment {name!r} in namespace {self._ns!r}")
        return self._parse(obj)

    def _parse(self, obj: dict[str, Any]) -> _Live:
        meta = obj.get("metadata", {})
        annotations = meta.get("annotations") or {}
        stable = Served.from_json(annotations.get(render.ANN_STABLE))
        if stable is None:
            raise ConflictError(f"InferenceService {self._ns}/{meta.get('name')} has no {render.ANN_STABLE} annotation")
        canary = Served.from_json(annotations.get(render.ANN_CANARY))
        mode = render.normalize_mode(
            annotations.get(render.MODE_ANNOTATION) or (obj.get("status") or {}).get("deploymentMode") or ""
        )
        spec = obj.get("spec", {})
        percent = 0
        if canary is not None and mode == render.STANDARD:
            percent = int((spec.get("canary") or [{}])[0].get("trafficPercent", 0))
        elif canary is not None:
            percent = int(spec.get("predictor", {}).get("canaryTrafficPercent", 0))
        features = tuple(f for f in (annotations.get(render.ANN_FEATURES) or "").split(",") if f)
        return _Live(obj, mode, stable, canary, percent, features)

    def _mode(self, name: str, current: _Live | None) -> str:
        """The deployment mode: configured, else the object's, else KServe's default (refused if unknown)."""
        if self.config.mode != "auto":
            mode = render.normalize_mode(self.config.mode)
            if current is not None and current.mode != mode:
                raise ConflictError(
                    f"InferenceService {self._ns}/{name} runs in {current.mode} mode, not {mode}: KServe cannot"
                    " switch an existing InferenceService's mode (delete it first)"
                )
            return mode
        if current is not None:
            return current.mode
        where = f"ConfigMap {self.config.kserve_namespace}/{KSERVE_CONFIGMAP}"
        try:
            cm = self._call(
                "get",
                "configmaps",
                self._core.read_namespaced_config_map,
                KSERVE_CONFIGMAP,
                self.config.kserve_namespace,
                _preload_content=False,
            )
        except NotFoundError as exc:
            raise InvalidInputError(
                f"cannot tell KServe's deployment mode: no {where} (set mode: Serverless or Standard)"
            ) from exc
        except PermissionDeniedError as exc:
            raise PermissionDeniedError(
                f"cannot tell KServe's deployment mode: {exc} (bind rbac.yaml's hybridml-kserve-mode Role, or set"
                " mode: Serverless or Standard)"
            ) from exc
        data = json.loads(cm.data).get("data") or {}
        try:
            mode = json.loads(data.get("deploy") or "{}").get("defaultDeploymentMode")
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"cannot tell KServe's deployment mode: {where} key 'deploy' is not JSON") from exc
        if not mode:
            raise InvalidInputError(
                f"cannot tell KServe's deployment mode: {where} has no deploy.defaultDeploymentMode"
                " (set mode: Serverless or Standard)"
            )
        return render.normalize_mode(mode)

    def _deployment(self, live: _Live) -> Deployment:
        obj, name = live.obj, live.obj["metadata"]["name"]
        status = obj.get("status") or {}
        endpoint = status.get("url") or (status.get("address") or {}).get("url") or ""
        endpoint = endpoint or f"http://{name}-predictor.{self._ns}.svc.cluster.local"
        percent, problems = live.canary_percent, []
        generation, observed = obj["metadata"].get("generation"), status.get("observedGeneration")
        current = observed == generation or self._canaries_caught_up(live, status)
        if not current:
            problems.append(f"KServe has not observed generation {generation} yet (observed {observed})")
        ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
        if ready is None:
            problems.append("no Ready condition yet")
        elif ready.get("status") != "True":
            problems.append(f"Ready is {ready.get('status')}: {ready.get('reason', '')} {ready.get('message', '')}")
        model = status.get("modelStatus") or {}
        if (model.get("states") or {}).get("activeModelState") == "FailedToLoad" or model.get("transitionStatus") in (
            "BlockedByFailedLoad",
            "InvalidSpec",
        ):
            failure = (model.get("lastFailureInfo") or {}).get("message", "")
            problems.append(f"model failed to load: {failure}".strip())
        if live.canary is not None and current:
            live_percent, canary_ready, why = self._canary_state(live, status)
            if live_percent is not None:
                percent = live_percent  # what the data plane does now (0 once a failed canary fell back)
            if not canary_ready:
                problems.append(f"canary {live.canary.version!r} not ready: {why}")
        if not problems and live.mode == render.STANDARD:
            rollout = self._rollout(live)
            if rollout:
                problems.append(rollout)
        detail = "; ".join(problems) or (
            f"stable {live.stable.version}"
            + (f", canary {live.canary.version} at {percent}%" if live.canary else "")
            + f" ({live.mode} mode)"
        )
        return Deployment(
            name=name,
            target=self.target_name,
            endpoint=endpoint,
            stable_version=live.stable.version,
            canary_version=live.canary.version if live.canary else None,
            canary_percent=percent,
            ready=not problems,
            detail=detail,
        )

    def _rollout(self, live: _Live) -> str | None:
        """Standard mode: why KServe's stable predictor Deployment does not serve ``live.stable`` yet (None: it does).

        The InferenceService's status cannot tell alone: KServe v0.20 copies that Deployment's
        ``observedGeneration`` into it (see :meth:`_canaries_caught_up`), so a status written before a new stable
        version was applied can still read as Ready. The Deployment's pod template must carry the stable version
        (label) and ``storageUri`` (KServe's storage-initializer annotation), and its rollout must be complete:
        the Deployment controller observed its generation, and every replica is updated and available.
        """
        name = live.obj["metadata"]["name"] + PREDICTOR_SUFFIX
        where = f"Deployment {self._ns}/{name}"
        try:
            raw = self._call(
                "get", "deployments", self._apps.read_namespaced_deployment, name, self._ns, _preload_content=False
            )
        except NotFoundError:
            return f"no {where} yet"
        deployment = json.loads(raw.data)
        template = deployment.get("spec", {}).get("template", {}).get("metadata") or {}
        version = (template.get("labels") or {}).get(render.LABEL_VERSION)
        uri = (template.get("annotations") or {}).get(SOURCE_URI)
        if (version, uri) != (live.stable.version, live.stable.storage_uri):
            return (
                f"{where} serves version {version!r} ({uri}), not stable {live.stable.version!r}"
                f" ({live.stable.storage_uri}) yet"
            )
        generation = deployment["metadata"].get("generation")
        status = deployment.get("status") or {}
        observed = status.get("observedGeneration")
        if observed is None or generation is None or observed < generation:
            return f"{where}: generation {generation} not observed yet (observed {observed})"
        wanted = deployment.get("spec", {}).get("replicas", 1)
        counts = [int(status.get(key) or 0) for key in ("replicas", "updatedReplicas", "availableReplicas")]
        if counts != [wanted] * 3:
            return (
                f"{where} rolling out: {counts[1]} updated, {counts[2]} available, {counts[0]} in all,"
                f" of {wanted} replicas"
            )
        return None

    @staticmethod
    def _canaries_caught_up(live: _Live, status: dict[str, Any]) -> bool:
        """Standard mode: whether KServe's canary statuses follow ``spec.canary`` (names and shares).

        KServe v0.20 reports the stable predictor Deployment's ``observedGeneration`` there, not the
        InferenceService's, so a change that leaves that Deployment alone (a traffic share, a canary added or
        dropped) never matches the generation; the canary statuses, rewritten on every reconcile, tell instead.
        """
        if live.mode != render.STANDARD or status.get("observedGeneration") is None:
            return False
        wanted = [
            (c.get("predictor", {}).get("name"), c.get("trafficPercent")) for c in live.obj["spec"].get("canary") or []
        ]
        seen = [(s.get("name"), s.get("trafficPercent")) for s in status.get("canaryStatuses") or []]
        return wanted == seen

    @staticmethod
    def _canary_state(live: _Live, status: dict[str, Any]) -> tuple[int | None, bool, str]:
        """The canary's live traffic share, whether it is ready, and why not: per mode, from the status."""
        if live.mode == render.STANDARD:
            entries = status.get("canaryStatuses") or []
            if not entries:
                return None, False, "no canaryStatuses yet"
            entry = entries[0]
            states = ((entry.get("modelStatus") or {}).get("states") or {}).get("activeModelState", "")
            return int(entry.get("trafficPercent", 0)), bool(entry.get("ready")), f"model {states or 'not loaded'}"
        predictor = (status.get("components") or {}).get("predictor") or {}
        latest = next((t for t in predictor.get("traffic") or [] if t.get("latestRevision")), None)
        created, ready = predictor.get("latestCreatedRevision"), predictor.get("latestReadyRevision")
        percent = int(latest.get("percent", 0)) if latest else None
        return percent, created is not None and created == ready, f"revision {created} (ready: {ready})"

    # ----- writing -----

    def _render(
        self, name: str, live: _Live, stable: Served, canary: Served | None = None, percent: int = 0
    ) -> dict[str, Any]:
        return render.inference_service(self.config, name, live.mode, stable, canary, percent, live.features)

    def _change(self, name: str, body: dict[str, Any], previous: _Live | None) -> Deployment:
        """Apply ``body`` and wait for Ready; on an exhausted budget put the previous spec back and say so."""
        self._apply(PLURAL, body)
        try:
            return self.wait_until_ready(name, self.config.ready_timeout_s, max_poll_s=self.config.poll_s)
        except NotReadyError as exc:
            where = f"InferenceService {self._ns}/{name}"
            if previous is None:
                self._call(
                    "delete",
                    PLURAL,
                    self._custom.delete_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self._ns,
                    PLURAL,
                    name,
                )
                left = f"deleted {where}"
                if self.config.runtime == render.MODEL_FORMAT:
                    left += f" (the shared ServingRuntime {self._ns}/{self.config.runtime} stays)"
            else:
                restore = self._render(name, previous, previous.stable, previous.canary, previous.canary_percent)
                self._apply(PLURAL, restore)
                was = previous.stable.version + (
                    f" + canary {previous.canary.version} at {previous.canary_percent}%" if previous.canary else ""
                )
                left = f"re-applied the previous spec of {where} (stable {was})"
            raise NotReadyError(f"{exc}; {left}") from exc

    def _apply(self, plural: str, body: dict[str, Any], version: str = VERSION) -> Any:
        """Server-side apply ``body`` as ``config.field_manager`` without forcing (conflicts are refused)."""
        # The generated CustomObjectsApi (30.x) cannot send an apply patch; the client's own dynamic client
        # calls call_api with the apply content type the same way.
        path = f"/apis/{GROUP}/{version}/namespaces/{self._ns}/{plural}/{body['metadata']['name']}"
        return self._call(
            "patch",
            plural,
            self.api_client.call_api,
            path,
            "PATCH",
            query_params=[("fieldManager", self.config.field_manager), ("force", "false")],
            header_params={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
            response_type="object",
            _return_http_data_only=True,
        )

    def _call(self, verb: str, resource: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the API, retrying 429/5xx with backoff and mapping refusals to hybridml errors."""
        from kubernetes.client.exceptions import ApiException

        pause = FIRST_RETRY_S
        for attempt in range(1, self.config.max_attempts + 1):
            try:
                return method(*args, **kwargs)
            except ApiException as exc:
                code = int(exc.status or 0)
                message = _message(exc)
                namespace = self.config.kserve_namespace if resource == "configmaps" else self._ns
                where = f"{resource} in namespace {namespace!r}"
                if code == 403 and message.startswith(WEBHOOK_DENIAL):
                    # An admission webhook's denial (KServe's validator, a policy engine) comes back as 403 too:
                    # the object was refused, not the caller's permission.
                    raise InvalidInputError(f"{verb} {where} refused: {message}") from exc
                if code == 403:
                    raise PermissionDeniedError(f"not allowed to {verb} {where}: {message}") from exc
                if code == 404:
                    raise NotFoundError(f"{resource} not found: {message}") from exc
                if code == 409:
                    raise ConflictError(f"{verb} {where} conflicts: {message}") from exc
                if code == 422:
                    raise InvalidInputError(f"{verb} {where} refused: {message}") from exc
                retry = code in RETRIED and not (code == 500 and verb == "patch")
                if not retry:
                    raise HybridmlError(f"{verb} {where} failed with {code}: {message}") from exc
                if attempt == self.config.max_attempts:
                    raise NotReadyError(
                        f"{verb} {where}: the Kubernetes API answered {code} {attempt} times: {message}"
                    ) from exc
                self._sleep(pause)
                pause *= 2
        raise AssertionError("unreachable")  # pragma: no cover


def _message(exc: Any) -> str:
    """The API server's one-line message from a refusal (its Status object), else the HTTP reason."""
    try:
        text = json.loads(exc.body or "{}").get("message")
    except (ValueError, AttributeError):
        text = None
    return str(text or exc.reason or "").replace("\n", " ")
