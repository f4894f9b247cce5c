"""The SageMaker target: each deployment is a real-time endpoint with a stable and a canary production variant.

What lives where (nothing is kept on this machine; SageMaker is the state):

- the model: ``s3://BUCKET/PREFIX/ENDPOINT/VERSION/DIGEST/model.tar.gz`` (and the bundle's ``hybridml.json``
  beside it), content-addressed, so a re-deploy finds its upload;
- a SageMaker model per (endpoint, version, archive, image, role): ``ENDPOINT-v<version>-<digest>``;
- an endpoint config per variant layout: ``ENDPOINT-c<digest>``, tagged with the version each role serves;
- the endpoint: variant ``stable`` (and ``canary``) with weights from the traffic percent, or ``stable`` and the
  shadow variant ``shadow`` (SageMaker allows a shadow only beside a single production variant).
"""

from __future__ import annotations

import builtins
import csv
import io
import json
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridml.adapters.aws import Caller, Clients, default_clients
from hybridml.core.model import MANIFEST, read_bundle
from hybridml.core.naming import check_model_name
from hybridml.deploy.config import SageMakerConfig
from hybridml.deploy.contract import (
    FIRST_POLL_S,
    MAX_POLL_S,
    Deployment,
    DeployTarget,
    ModelRef,
    check_rows,
    check_split_percent,
    check_traffic_percent,
)
from hybridml.deploy.fetch import Fetch, fetch_artifact
from hybridml.deploy.sagemaker import naming
from hybridml.deploy.sagemaker.packaging import ARCHIVE, XGBOOST_BUILTIN, pack
from hybridml.errors import ConflictError, InvalidInputError, NotFoundError, NotReadyError

STABLE, CANARY, SHADOW = "stable", "canary", "shadow"
IN_SERVICE, FAILED = "InService", "Failed"
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


@dataclass(frozen=True)
class _Variant:
    """One role of an endpoint: the version label, the SageMaker model serving it, and its weight."""

    version: str
    model: str
    weight: int = 0


@dataclass(frozen=True)
class _Live:
    """An endpoint as read from SageMaker: its description, the config in use, and that config's roles."""

    name: str
    endpoint: dict[str, Any]
    config_name: str
    roles: dict[str, _Variant]
    tags: dict[str, str]

    @property
    def status(self) -> str:
        return str(self.endpoint.get("EndpointStatus", "Unknown"))


def _check_version(version: str) -> str:
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise InvalidInputError(f"invalid version {version!r}: use letters, digits, '.', '_' and '-'")
    return version


def _label(name: str, ref: ModelRef) -> str:
    """The version label of ``ref`` on endpoint ``name``: another model's version carries that model's name."""
    return str(ref.version) if ref.name == name else f"{ref.name}-{ref.version}"


class SageMakerTarget(DeployTarget):
    """Serve deployments as SageMaker real-time endpoints (see the module docstring for the resources).

    * :meth:`deploy` creates the endpoint, or updates it to a new endpoint config: with SageMaker's blue/green
      deployment guardrails (canary traffic shift of ``canary_size_percent`` of capacity, auto-rollback on the
      ``rollback_alarms``) when the variant names stay the same, as they must for guardrails; adding or
      dropping the canary variant is a plain blue/green update. It then polls DescribeEndpoint until the new
      config is ``InService`` within ``ready_timeout_s``. A ``Failed`` endpoint raises with its FailureReason;
      an update SageMaker rolled back raises too (the previous config keeps serving); an exhausted budget raises
      listing the resources and their state. Deploying what is already in service changes nothing.
    * After every change that reached ``InService``, the endpoint configs and models of this endpoint that the
      endpoint no longer uses are deleted (never those in use); model archives in S3 are kept.
    * :meth:`set_traffic` uses UpdateEndpointWeightsAndCapacities (no new fleet).
    * Unlike the contract's general case, a canary and a shadow never share an endpoint: SageMaker allows a
      shadow variant only beside a single production variant, so either is refused while the other serves.

    Args:
        config: image, role, bucket, region, instances, budgets and blue/green settings.
        fetch: how a model reference's ``artifact_uri`` becomes a local bundle directory to pack.
        clock: monotonic clock, injectable for tests.
        sleep: sleep function (polls and throttling backoff), injectable for tests.
        clients: boto3 clients (default: the standard AWS chain in ``config.region``).
    """

    target_name = "sagemaker"

    def __init__(
        self,
        config: SageMakerConfig,
        *,
        fetch: Fetch = fetch_artifact,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        clients: Clients | None = None,
    ) -> None:
        super().__init__(clock=clock, sleep=sleep)
        self.config = config
        self._fetch = fetch
        self.clients = clients or default_clients(config.region)
        self._call = Caller(sleep, config.max_attempts)
        self._features_cache: dict[str, builtins.list[str]] = {}

    # ----- the contract -----

    def deploy(self, ref: ModelRef, traffic_percent: int = 100) -> Deployment:
        """Serve ``ref`` as the stable version (100: replaces stable, canary and shadow) or as a canary (<100)."""
        check_model_name(ref.name)
        name = check_model_name(self.config.endpoint_name or ref.name)
        # An endpoint named by the config serves the model deployed to it under its own version labels.
        version = _check_version(str(ref.version) if self.config.endpoint_name else _label(name, ref))
        check_traffic_percent(traffic_percent)
        current = self._read(name, missing_ok=True)
        if traffic_percent < 100:
            if current is None:
                raise InvalidInputError(
                    f"cannot deploy {version!r} as a canary: {name!r} has no stable version yet (deploy it at 100%)"
                )
            self._check_same_features(current, ref, version, "canary")
            if SHADOW in current.roles:
                raise InvalidInputError(
                    f"SageMaker allows a shadow variant only beside a single production variant: remove the shadow"
                    f" {current.roles[SHADOW].version!r} of {name!r} before deploying a canary"
                )
        self.config.require_deploy_settings()
        model = self._prepare_model(name, version, ref)
        if traffic_percent == 100:
            roles = {STABLE: _Variant(version, model, 100)}
        else:
            assert current is not None  # checked above
            stable = current.roles[STABLE]
            roles = {
                STABLE: _Variant(stable.version, stable.model, 100 - traffic_percent),
                CANARY: _Variant(version, model, traffic_percent),
            }
        return self._apply(name, current, roles, naming.features_tag(ref.schema.names))

    def set_traffic(self, name: str, percent: int) -> Deployment:
        """Give the canary ``percent`` of requests with UpdateEndpointWeightsAndCapacities, then wait for it."""
        check_split_percent(percent)
        live = self._read(name)
        if CANARY not in live.roles:
            raise ConflictError(f"deployment {name!r} has no canary to send traffic to")
        self._require_in_service(live)
        self._call(
            self.clients.sagemaker,
            "update_endpoint_weights_and_capacities",
            EndpointName=name,
            DesiredWeightsAndCapacities=[
                {"VariantName": STABLE, "DesiredWeight": float(100 - percent)},
                {"VariantName": CANARY, "DesiredWeight": float(percent)},
            ],
        )
        self._await(name, live.config_name, live)
        return self.status(name)

    def shadow(self, name: str, ref: ModelRef | None) -> Deployment:
        """Add, replace (``ref``) or remove (None) the shadow variant (only beside a single production variant)."""
        live = self._read(name)
        roles = {role: variant for role, variant in live.roles.items() if role != SHADOW}
        if ref is None:
            if SHADOW not in live.roles:
                raise ConflictError(f"deployment {name!r} has no shadow to remove")
            return self._apply(name, live, roles, live.tags.get(naming.TAG_FEATURES))
        label = _check_version(_label(name, ref))
        self._check_same_features(live, ref, label, "shadow")
        if CANARY in live.roles:
            raise InvalidInputError(
                f"SageMaker allows a shadow variant only beside a single production variant: promote or roll back"
                f" the canary {live.roles[CANARY].version!r} of {name!r} first"
            )
        self.config.require_deploy_settings()
        roles[SHADOW] = _Variant(label, self._prepare_model(name, label, ref), 100)
        return self._apply(name, live, roles, live.tags.get(naming.TAG_FEATURES))

    def status(self, name: str) -> Deployment:
        """State of ``name`` now, from DescribeEndpoint and the tags of the endpoint config in use."""
        return self._deployment(self._read(name))

    def promote(self, name: str) -> Deployment:
        """Make the canary the only production variant (a new endpoint config, blue/green update)."""
        live = self._read(name)
        canary = live.roles.get(CANARY)
        if canary is None:
            raise ConflictError(f"deployment {name!r} has no canary to promote")
        return self._apply(name, live, {STABLE: _Variant(canary.version, canary.model, 100)}, None)

    def rollback(self, name: str) -> Deployment:
        """Drop the canary variant so stable answers everything (a new endpoint config, blue/green update)."""
        live = self._read(name)
        if CANARY not in live.roles:
            raise ConflictError(f"deployment {name!r} has no canary to roll back")
        stable = live.roles[STABLE]
        return self._apply(name, live, {STABLE: _Variant(stable.version, stable.model, 100)}, None)

    def delete(self, name: str) -> None:
        """Delete the endpoint, wait until SageMaker has removed it, then its endpoint configs and models."""
        live = self._read(name)
        self._call(self.clients.sagemaker, "delete_endpoint", EndpointName=name)
        deadline = self._clock() + self.config.ready_timeout_s
        pause = FIRST_POLL_S
        while self._describe(name) is not None:
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise NotReadyError(
                    f"endpoint {name!r} still deleting after {self.config.ready_timeout_s:g}s; its config"
                    f" {live.config_name} and models are left in place"
                )
            self._sleep(min(pause, remaining))
            pause = min(pause * 2, self.config.poll_s)
        self._cleanup(name, keep_config=None, keep_models=set())

    def list(self) -> builtins.list[Deployment]:
        """Every endpoint deployed by hybridml (its config carries hybridml tags), sorted by name."""
        names: builtins.list[str] = []
        token: str | None = None
        while True:
            page = self._call(self.clients.sagemaker, "list_endpoints", **_paging(token))
            names += [item["EndpointName"] for item in page.get("Endpoints", [])]
            token = page.get("NextToken")
            if not token:
                break
        deployments = []
        for name in sorted(set(names)):
            try:
                check_model_name(name)
                deployments.append(self.status(name))
            except (InvalidInputError, NotFoundError):
                continue  # not an endpoint of hybridml's, or gone since the listing
        return deployments

    def invoke(self, name: str, rows: Sequence[Mapping[str, Any]], protocol: str = "v2") -> builtins.list[float]:
        """Score ``rows`` with InvokeEndpoint.

        The project's image gets ``application/json`` (``{"instances": [row objects]}``) whatever ``protocol``
        says (SageMaker's container contract has no V1/V2); SageMaker's XGBoost image gets ``text/csv`` in the
        schema's feature order. Scores are read from JSON (``{"predictions": [...]}``) or CSV answers.
        """
        check_rows(rows, protocol)
        live = self._read(name)
        if live.status != IN_SERVICE:
            raise NotReadyError(f"endpoint {name!r} is {live.status}, not InService")
        if live.tags.get(naming.TAG_SERVING) == XGBOOST_BUILTIN:
            features = self._features(live.roles[STABLE].model)
            body, content_type = _csv_rows(rows, features), "text/csv"
        else:
            body, content_type = json.dumps({"instances": [dict(row) for row in rows]}).encode(), "application/json"
        answer = self._call(
            self.clients.runtime,
            "invoke_endpoint",
            on_error=lambda exc: _model_error(exc, name),
            EndpointName=name,
            Body=body,
            ContentType=content_type,
            Accept=content_type,
        )
        return parse_scores(answer["Body"].read(), str(answer.get("ContentType", "")), len(rows))

    def wait_until_ready(
        self, name: str, timeout_s: float, *, first_poll_s: float = FIRST_POLL_S, max_poll_s: float = MAX_POLL_S
    ) -> Deployment:
        """As :meth:`DeployTarget.wait_until_ready`, but a ``Failed`` endpoint ends the wait at once.

        Raises:
            NotReadyError: the endpoint is Failed (with its FailureReason), or not ready within ``timeout_s``.
        """
        if not timeout_s >= 0:
            raise InvalidInputError(f"timeout must be zero or more seconds, got {timeout_s!r}")
        if not 0 < first_poll_s <= max_poll_s:
            raise InvalidInputError(f"poll intervals must satisfy 0 < first <= max, got {first_poll_s}, {max_poll_s}")
        deadline = self._clock() + timeout_s
        pause = first_poll_s
        while True:
            live = self._read(name)
            current = self._deployment(live)
            if current.ready:
                return current
            if live.status == FAILED:
                raise NotReadyError(f"deployment {name!r} failed: {current.detail}")
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise NotReadyError(
                    f"deployment {name!r} not ready after {timeout_s:g}s (last status: {current.detail})"
                )
            self._sleep(min(pause, remaining))
            pause = min(pause * 2, max_poll_s)

    # ----- reading -----

    def _describe(self, name: str) -> dict[str, Any] | None:
        answer = self._call(self.clients.sagemaker, "describe_endpoint", missing_ok=True, EndpointName=name)
        return dict(answer) if answer is not None else None

    def _read(self, name: str, *, missing_ok: bool = False) -> Any:
        """The endpoint ``name`` as a :class:`_Live` (None with ``missing_ok`` when there is none).

        Raises:
            InvalidInputError: a name breaking the naming rule (checked before any call).
            NotFoundError: no endpoint, or one hybridml did not deploy.
        """
        check_model_name(name)
        endpoint = self._describe(name)
        if endpoint is None:
            if missing_ok:
                return None
            raise NotFoundError(f"no sagemaker deployment {name!r}")
        config_name = str(endpoint["EndpointConfigName"])
        config = self._call(
            self.clients.sagemaker, "describe_endpoint_config", missing_ok=True, EndpointConfigName=config_name
        )
        tags = self._tags(config["EndpointConfigArn"]) if config is not None else {}
        if tags.get(naming.TAG_ENDPOINT) != name:
            raise NotFoundError(f"endpoint {name!r} exists but was not deployed by hybridml (no sagemaker deployment)")
        live_weights = {
            v["VariantName"]: v.get("DesiredWeight", v.get("CurrentWeight", 0))
            for v in endpoint.get("ProductionVariants", [])
        }
        roles: dict[str, _Variant] = {}
        for variant in config.get("ProductionVariants", []):
            role = variant["VariantName"]
            version = tags.get(naming.ROLE_TAGS.get(role, ""), "")
            weight = live_weights.get(role, variant.get("InitialVariantWeight", 0))
            roles[role] = _Variant(version, variant["ModelName"], round(float(weight or 0)))
        for variant in config.get("ShadowProductionVariants", []):
            roles[SHADOW] = _Variant(tags.get(naming.ROLE_TAGS[SHADOW], ""), variant["ModelName"], 100)
        if SHADOW not in roles and naming.ROLE_TAGS[SHADOW] in tags:
            # Some SageMaker emulators drop ShadowProductionVariants; the immutable config tags still name it.
            roles[SHADOW] = _Variant(tags[naming.ROLE_TAGS[SHADOW]], tags.get(naming.TAG_SHADOW_MODEL, ""), 100)
        if STABLE not in roles:
            raise NotFoundError(f"endpoint {name!r} has no {STABLE!r} variant: it was not deployed by hybridml")
        return _Live(name=name, endpoint=endpoint, config_name=config_name, roles=roles, tags=tags)

    def _tags(self, arn: str) -> dict[str, str]:
        tags: list[dict[str, str]] = []
        token: str | None = None
        while True:
            page = self._call(self.clients.sagemaker, "list_tags", ResourceArn=arn, **_paging(token))
            tags += page.get("Tags", [])
            token = page.get("NextToken")
            if not token:
                return naming.tag_map(tags)

    def _deployment(self, live: _Live) -> Deployment:
        stable, canary, shadow = live.roles[STABLE], live.roles.get(CANARY), live.roles.get(SHADOW)
        total = stable.weight + (canary.weight if canary else 0)
        percent = round(100 * canary.weight / total) if canary and total > 0 else 0
        ready = live.status == IN_SERVICE
        if ready:
            detail = f"serving {stable.version}"
            if canary is not None:
                detail += f" ({100 - percent}%) and canary {canary.version} ({percent}%)"
            detail += f" on SageMaker endpoint {live.name} (config {live.config_name})"
            if shadow is not None:
                detail += f", shadowed by {shadow.version}"
        else:
            detail = f"SageMaker endpoint {live.name} is {live.status}"
            reason = live.endpoint.get("FailureReason")
            if reason:
                detail += f": {' '.join(str(reason).split())}"
        return Deployment(
            name=live.name,
            target=self.target_name,
            endpoint=f"{self.clients.runtime.meta.endpoint_url}/endpoints/{live.name}/invocations",
            stable_version=stable.version,
            canary_version=canary.version if canary else None,
            canary_percent=percent,
            ready=ready,
            detail=detail,
            shadow_version=shadow.version if shadow else None,
        )

    def _features(self, model: str) -> builtins.list[str]:
        """The feature order of SageMaker model ``model``, from the manifest uploaded beside its archive."""
        if model not in self._features_cache:
            described = self._call(self.clients.sagemaker, "describe_model", ModelName=model)
            container = described.get("PrimaryContainer") or (described.get("Containers") or [{}])[0]
            bucket, key = _split_s3(str(container.get("ModelDataUrl", "")))
            manifest_key = key.rsplit("/", 1)[0] + f"/{MANIFEST}"
            body = self._call(self.clients.s3, "get_object", Bucket=bucket, Key=manifest_key)["Body"].read()
            self._features_cache[model] = [f["name"] for f in json.loads(body)["schema"]["features"]]
        return self._features_cache[model]

    def _check_same_features(self, live: _Live, ref: ModelRef, label: str, role: str) -> None:
        """Refuse a canary or shadow whose features differ from stable's: one endpoint, one request contract."""
        if live.tags.get(naming.TAG_FEATURES) != naming.features_tag(ref.schema.names):
            raise InvalidInputError(
                f"{role} {label!r} has different features than stable {live.roles[STABLE].version!r}"
                + ("; deploy it at 100% instead" if role == "canary" else "")
            )

    # ----- writing -----

    def _prepare_model(self, name: str, version: str, ref: ModelRef) -> str:
        """Fetch and check the bundle, upload its archive and create its SageMaker model (each unless already there)."""
        from hybridml.serving.predictor import BundlePredictor
        from hybridml.serving.storage import check_no_pickle

        config = self.config
        assert config.bucket is not None and config.role_arn is not None and config.image_uri is not None
        with tempfile.TemporaryDirectory(prefix="hybridml-sagemaker-") as scratch:
            source = self._fetch(ref.artifact_uri, Path(scratch) / "bundle")
            check_no_pickle(source)
            BundlePredictor.load(source)  # a model that does not load is refused before anything is created
            bundle = read_bundle(source)
            if bundle.schema.schema_hash != ref.schema.schema_hash:
                raise InvalidInputError(
                    f"the bundle at {ref.artifact_uri} does not have the schema its reference {ref.name!r}"
                    f" version {ref.version!r} names"
                )
            package = pack(source, config.serving)
            manifest = (source / MANIFEST).read_bytes()
        key = "/".join(p for p in (config.prefix, name, version, package.sha256[:16], ARCHIVE) if p)
        if self._call(self.clients.s3, "head_object", missing_ok=True, Bucket=config.bucket, Key=key) is None:
            self._call(self.clients.s3, "put_object", Bucket=config.bucket, Key=key, Body=package.data)
            self._call(
                self.clients.s3,
                "put_object",
                Bucket=config.bucket,
                Key=key.rsplit("/", 1)[0] + f"/{MANIFEST}",
                Body=manifest,
            )
        data_url = f"s3://{config.bucket}/{key}"
        spec = {"data": data_url, "image": config.image_uri, "role": config.role_arn, "serving": config.serving}
        model = naming.model_name(name, version, spec)
        if self._call(self.clients.sagemaker, "describe_model", missing_ok=True, ModelName=model) is None:
            self._call(
                self.clients.sagemaker,
                "create_model",
                ModelName=model,
                ExecutionRoleArn=config.role_arn,
                PrimaryContainer={
                    "Image": config.image_uri,
                    "ModelDataUrl": data_url,
                    "Environment": {"HYBRIDML_MODEL_NAME": name, "HYBRIDML_MODEL_VERSION": version},
                },
                Tags=naming.tags(
                    {
                        naming.TAG_ENDPOINT: name,
                        naming.TAG_VERSION: version,
                        naming.TAG_SOURCE: ref.artifact_uri,
                        naming.TAG_FEATURES: naming.features_tag(ref.schema.names),
                    }
                ),
            )
        return model

    def _variant(self, role: str, variant: _Variant) -> dict[str, Any]:
        return {
            "VariantName": role,
            "ModelName": variant.model,
            "InitialInstanceCount": self.config.instance_count,
            "InstanceType": self.config.instance_type,
            "InitialVariantWeight": float(variant.weight),
        }

    def _apply(self, name: str, current: _Live | None, roles: dict[str, _Variant], features: str | None) -> Deployment:
        """Make the endpoint serve ``roles``: create or update it to the config of that layout, wait, clean up."""
        features = features or (current.tags.get(naming.TAG_FEATURES) if current else None)
        production = {role: v for role, v in roles.items() if role != SHADOW}
        layout = {
            "variants": {role: [v.model, v.weight] for role, v in production.items()},
            "shadow": roles[SHADOW].model if SHADOW in roles else None,
            "instances": [self.config.instance_type, self.config.instance_count],
        }
        config_name = naming.config_name(name, layout)
        if current is not None and current.config_name == config_name:
            return self._deployment(current)  # the layout in service already: change nothing
        if current is not None:
            self._require_in_service(current)
        if (
            self._call(
                self.clients.sagemaker,
                "describe_endpoint_config",
                missing_ok=True,
                EndpointConfigName=config_name,
            )
            is None
        ):
            params: dict[str, Any] = {
                "EndpointConfigName": config_name,
                "ProductionVariants": [self._variant(role, v) for role, v in production.items()],
                "Tags": naming.tags(
                    {
                        naming.TAG_ENDPOINT: name,
                        naming.TAG_FEATURES: features,
                        naming.TAG_SERVING: self.config.serving,
                        **{naming.ROLE_TAGS[role]: v.version for role, v in roles.items()},
                        naming.TAG_SHADOW_MODEL: roles[SHADOW].model if SHADOW in roles else None,
                    }
                ),
            }
            if SHADOW in roles:
                params["ShadowProductionVariants"] = [self._variant(SHADOW, roles[SHADOW])]
            self._call(self.clients.sagemaker, "create_endpoint_config", **params)
        if current is None:
            self._call(
                self.clients.sagemaker,
                "create_endpoint",
                EndpointName=name,
                EndpointConfigName=config_name,
                Tags=naming.tags({naming.TAG_ENDPOINT: name}),
            )
        else:
            update: dict[str, Any] = {"EndpointName": name, "EndpointConfigName": config_name}
            if set(production) == {v for v in current.roles if v != SHADOW}:
                update["DeploymentConfig"] = self.deployment_config()  # guardrails need the same variant names
            self._call(self.clients.sagemaker, "update_endpoint", **update)
        self._await(name, config_name, current)
        models = {v.model for v in roles.values()}
        self._cleanup(name, keep_config=config_name, keep_models=models)
        return self.status(name)

    def deployment_config(self) -> dict[str, Any]:
        """UpdateEndpoint's DeploymentConfig: blue/green with a canary step, and auto-rollback on the alarms."""
        config = self.config
        routing: dict[str, Any] = {
            "Type": "CANARY",
            "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": config.canary_size_percent},
            "WaitIntervalInSeconds": config.canary_wait_s,
        }
        # SageMaker takes 600-14400 s and must outlast the canary wait and the final termination wait.
        floor = max(600, config.canary_wait_s + config.termination_wait_s + 60)
        timeout = int(max(floor, min(config.ready_timeout_s, 14400)))
        deployment: dict[str, Any] = {
            "BlueGreenUpdatePolicy": {
                "TrafficRoutingConfiguration": routing,
                "TerminationWaitInSeconds": config.termination_wait_s,
                "MaximumExecutionTimeoutInSeconds": min(timeout, 14400),
            }
        }
        if config.rollback_alarms:
            deployment["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": a} for a in config.rollback_alarms]}
        return deployment

    def _require_in_service(self, live: _Live) -> None:
        if live.status != IN_SERVICE:
            raise ConflictError(
                f"endpoint {live.name!r} is {live.status}; SageMaker changes an endpoint only when it is InService"
            )

    def _await(self, name: str, config_name: str, previous: _Live | None) -> None:
        """Poll DescribeEndpoint until ``config_name`` is InService within ``ready_timeout_s``.

        Raises:
            NotReadyError: the endpoint Failed (a failed creation is deleted, the config and models stay), an
                update ended back on the previous config (SageMaker rolled it back), or the budget ran out
                (everything is left in place, and listed).
        """
        budget = self.config.ready_timeout_s
        deadline = self._clock() + budget
        pause = FIRST_POLL_S
        while True:
            endpoint = self._describe(name)
            if endpoint is None:
                raise NotReadyError(f"endpoint {name!r} disappeared while waiting for config {config_name}")
            status = str(endpoint.get("EndpointStatus"))
            reason = " ".join(str(endpoint.get("FailureReason") or "no reason given").split())
            serving = endpoint.get("EndpointConfigName")
            if status == IN_SERVICE and serving == config_name:
                return
            if status == FAILED:
                if previous is None:
                    self._call(self.clients.sagemaker, "delete_endpoint", missing_ok=True, EndpointName=name)
                    raise NotReadyError(
                        f"SageMaker endpoint {name!r} failed: {reason} (the failed endpoint was deleted; endpoint"
                        f" config {config_name} and its models are kept)"
                    )
                raise NotReadyError(
                    f"SageMaker endpoint {name!r} failed to update to config {config_name}: {reason}"
                    f" (it was serving {previous.config_name})"
                )
            # Back in service on another config with a reason: SageMaker rolled the update back (an alarm fired
            # or the new fleet failed); without a reason the update may not have started yet.
            if (
                status == IN_SERVICE
                and previous is not None
                and endpoint.get("FailureReason")
                and serving != config_name
            ):
                raise NotReadyError(
                    f"SageMaker rolled back the update of {name!r} to config {config_name}: {reason};"
                    f" {previous.config_name} keeps serving"
                )
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise NotReadyError(
                    f"SageMaker endpoint {name!r} not InService on config {config_name} after {budget:g}s; left as"
                    f" is: {self._inventory(name)}"
                )
            self._sleep(min(pause, remaining))
            pause = min(pause * 2, self.config.poll_s)

    def _inventory(self, name: str) -> str:
        """One line listing the endpoint, its configs and models, and their state (for errors that leave them)."""
        endpoint = self._describe(name)
        parts = [
            f"endpoint {name} {endpoint.get('EndpointStatus')} on config {endpoint.get('EndpointConfigName')}"
            if endpoint
            else f"endpoint {name} absent"
        ]
        configs, models = self._owned(name)
        parts.append(f"configs {', '.join(sorted(configs)) or 'none'}")
        parts.append(f"models {', '.join(sorted(models)) or 'none'}")
        return "; ".join(parts)

    def _owned(self, name: str) -> tuple[builtins.list[str], builtins.list[str]]:
        """Names of the endpoint configs and models tagged as this endpoint's."""
        configs = [
            c["EndpointConfigName"]
            for c in self._paged("list_endpoint_configs", "EndpointConfigs", NameContains=f"{name}-c")
            if c["EndpointConfigName"].startswith(f"{name}-c")
            and self._tags(c["EndpointConfigArn"]).get(naming.TAG_ENDPOINT) == name
        ]
        models = [
            m["ModelName"]
            for m in self._paged("list_models", "Models", NameContains=f"{name}-v")
            if m["ModelName"].startswith(f"{name}-v") and self._tags(m["ModelArn"]).get(naming.TAG_ENDPOINT) == name
        ]
        return configs, models

    def _paged(self, method: str, key: str, **params: Any) -> builtins.list[dict[str, Any]]:
        items: builtins.list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = self._call(self.clients.sagemaker, method, **params, **_paging(token))
            items += page.get(key, [])
            token = page.get("NextToken")
            if not token:
                return items

    def _cleanup(self, name: str, *, keep_config: str | None, keep_models: set[str]) -> None:
        """Delete this endpoint's configs and models other than those kept (the ones in use)."""
        configs, models = self._owned(name)
        for config in configs:
            if config != keep_config:
                self._call(self.clients.sagemaker, "delete_endpoint_config", missing_ok=True, EndpointConfigName=config)
        for model in models:
            if model not in keep_models:
                self._call(self.clients.sagemaker, "delete_model", missing_ok=True, ModelName=model)


def _paging(token: str | None) -> dict[str, Any]:
    return {"NextToken": token} if token else {}


def _split_s3(uri: str) -> tuple[str, str]:
    match = re.fullmatch(r"s3://([^/]+)/(.+)", uri)
    if match is None:
        raise NotReadyError(f"SageMaker model data {uri!r} is not an s3:// URI")
    return match[1], match[2]


def _csv_rows(rows: Sequence[Mapping[str, Any]], features: Sequence[str]) -> bytes:
    """Rows as CSV in feature order, no header (what SageMaker's XGBoost image reads); booleans as 0/1."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for i, row in enumerate(rows):
        missing = [f for f in features if f not in row]
        if missing:
            raise InvalidInputError(f"row {i} lacks feature {missing[0]!r}")
        values = [row[f] for f in features]
        writer.writerow(["" if v is None else int(v) if isinstance(v, bool) else v for v in values])
    return out.getvalue().encode()


def parse_scores(body: bytes, content_type: str, n_rows: int) -> builtins.list[float]:
    """Positive-class scores from an InvokeEndpoint answer: JSON (``predictions``) or CSV, one per row.

    Accepted JSON items: a number, ``{"score": x}`` / ``{"probability": x}``, or ``[p0, p1]`` (p1 is taken).

    Raises:
        NotReadyError: an answer that is neither, or has another number of scores than rows.
    """
    text = body.decode("utf-8", errors="replace").strip()
    items: builtins.list[Any]
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        parsed = None
        try:
            items = [float(cell) for line in text.splitlines() for cell in line.split(",") if cell.strip()]
        except ValueError:
            raise NotReadyError(f"endpoint answered {content_type or 'an unknown type'} that holds no scores") from None
    if parsed is not None:
        if isinstance(parsed, dict):
            parsed = parsed.get("predictions", parsed.get("outputs"))
        if isinstance(parsed, (int, float)):
            parsed = [parsed]
        if not isinstance(parsed, builtins.list):
            raise NotReadyError("endpoint answered JSON without a predictions list")
        items = parsed
    scores: builtins.list[float] = []
    for item in items:
        if isinstance(item, dict):
            item = item.get("score", item.get("probability"))
        if isinstance(item, builtins.list) and len(item) == 2:
            item = item[1]
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise NotReadyError(f"endpoint answered a prediction that is not a score: {str(item)[:60]}")
        scores.append(float(item))
    if len(scores) != n_rows:
        raise NotReadyError(f"endpoint answered {len(scores)} scores for {n_rows} rows")
    return scores


def _model_error(exc: BaseException, name: str) -> Exception:
    """InvokeEndpoint's error as a hybridml error: the container's 4xx is the caller's fault, the rest is not."""
    from hybridml.adapters.aws import error_code, is_missing, mapped

    response = getattr(exc, "response", {}) or {}
    if error_code(exc) == "ModelError":
        status = int(response.get("OriginalStatusCode", 500) or 500)
        message = " ".join(str(response.get("OriginalMessage") or response.get("Error", {}).get("Message")).split())
        if 400 <= status < 500:
            return InvalidInputError(f"endpoint {name!r} refused the rows ({status}): {message[:300]}")
        return NotReadyError(f"endpoint {name!r} failed ({status}): {message[:300]}")
    if is_missing(exc):
        return NotFoundError(f"no sagemaker deployment {name!r}")
    return mapped(exc, "InvokeEndpoint")
