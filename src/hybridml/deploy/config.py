"""Typed configuration of each deploy target, and how it is read from CLI flags, pipeline parameters or a file."""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from hybridml.core.naming import check_model_name
from hybridml.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from hybridml.config import Settings

TARGETS = ("local", "kserve", "sagemaker")
BUILT = ("local", "kserve", "sagemaker")
SERVING_MODES = ("project", "xgboost-builtin")


@dataclass(frozen=True)
class TargetConfig:
    """Base of every target's configuration; ``kind`` names the target the factory builds from it."""

    kind: ClassVar[str] = "abstract"


@dataclass(frozen=True)
class LocalConfig(TargetConfig):
    """The local target: model server processes on this machine.

    Attributes:
        state_dir: directory of deployment state, logs and bundle copies (created if needed).
        host: address new servers listen on (their control listener stays on loopback).
        start_timeout_s: how long a new server may take to become ready.
        python: interpreter that runs the servers (needs hybridml installed).
        control_token_file: file holding the bearer token of the servers' control listeners (None: no token;
            loopback control calls need none).
        payload_log_max_bytes: size at which a server rotates its payload log (None: the server's default).
        payload_log_keep: how many rotated payload logs a server keeps (None: the server's default).
    """

    kind: ClassVar[str] = "local"

    state_dir: Path
    host: str = "127.0.0.1"
    start_timeout_s: float = 120.0
    python: str = sys.executable
    control_token_file: str | None = None
    payload_log_max_bytes: int | None = None
    payload_log_keep: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.state_dir, (str, Path)) or not str(self.state_dir):
            raise InvalidInputError(f"local deploy config: state_dir must be a directory path, got {self.state_dir!r}")
        object.__setattr__(self, "state_dir", Path(self.state_dir).expanduser())
        if not isinstance(self.host, str) or not self.host:
            raise InvalidInputError(f"local deploy config: host must be a non-empty string, got {self.host!r}")
        timeout = self.start_timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise InvalidInputError(f"local deploy config: start_timeout_s must be a positive number, got {timeout!r}")
        if not isinstance(self.python, str) or not self.python:
            raise InvalidInputError(f"local deploy config: python must be a non-empty string, got {self.python!r}")
        if self.control_token_file is not None and not isinstance(self.control_token_file, str):
            raise InvalidInputError(
                f"local deploy config: control_token_file must be a path, got {self.control_token_file!r}"
            )
        for key in ("payload_log_max_bytes", "payload_log_keep"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidInputError(f"local deploy config: {key} must be a positive integer, got {value!r}")


_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")


@dataclass(frozen=True)
class SageMakerConfig(TargetConfig):
    """The SageMaker target: real-time endpoints built from a ``model.tar.gz`` in S3 (see docs/sagemaker.md).

    ``image_uri``, ``role_arn`` and ``bucket`` are needed to deploy; reading, re-weighting, promoting, rolling
    back and deleting endpoints work without them. Credentials and the API endpoint come from the standard AWS
    chain (``AWS_PROFILE``, ``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``...), never from this object.

    Attributes:
        image_uri: serving image (the project's predictor image, or SageMaker's XGBoost image).
        role_arn: execution role SageMaker assumes to pull the image and read the model from S3.
        bucket: S3 bucket of the ``model.tar.gz`` files.
        prefix: key prefix under ``bucket`` (``PREFIX/ENDPOINT/VERSION/DIGEST/model.tar.gz``).
        region: AWS region (None: the AWS chain's default).
        instance_type: instance type of every production variant.
        instance_count: initial instance count of every production variant.
        endpoint_name: SageMaker endpoint to deploy to (None: the registered model's name).
        ready_timeout_s: how long one deploy, update or traffic change may take to reach ``InService``.
        poll_s: longest pause between two DescribeEndpoint polls (they start at 0.05 s and double).
        serving: ``project`` (the project's image reads the bundle) or ``xgboost-builtin`` (SageMaker's
            XGBoost image reads ``xgboost-model``; XGBoost models without category features only).
        rollback_alarms: CloudWatch alarm names that roll a blue/green update back when they fire.
        canary_size_percent: share of capacity (1-50) the new fleet gets first in a blue/green update.
        canary_wait_s: how long SageMaker watches the alarms after the canary step before shifting the rest.
        termination_wait_s: how long the old fleet is kept after the full shift (a last rollback window).
        max_attempts: attempts per AWS call when it is throttled (1: no retry).
    """

    kind: ClassVar[str] = "sagemaker"

    image_uri: str | None = None
    role_arn: str | None = None
    bucket: str | None = None
    prefix: str = "hybridml"
    region: str | None = None
    instance_type: str = "ml.m5.large"
    instance_count: int = 1
    endpoint_name: str | None = None
    ready_timeout_s: float = 1800.0
    poll_s: float = 30.0
    serving: str = "project"
    rollback_alarms: tuple[str, ...] = ()
    canary_size_percent: int = 10
    canary_wait_s: int = 300
    termination_wait_s: int = 120
    max_attempts: int = 5

    def __post_init__(self) -> None:
        def bad(key: str, wanted: str) -> InvalidInputError:
            return InvalidInputError(f"sagemaker deploy config: {key} must be {wanted}, got {getattr(self, key)!r}")

        for key in ("image_uri", "role_arn", "bucket", "region", "endpoint_name"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise bad(key, "a non-empty string")
        if self.role_arn is not None and not _ARN.fullmatch(self.role_arn):
            raise bad("role_arn", "an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)")
        if self.bucket is not None and not _BUCKET.fullmatch(self.bucket):
            raise bad("bucket", "an S3 bucket name (3-63 lower-case letters, digits, '.' and '-')")
        if self.region is not None and not _REGION.fullmatch(self.region):
            raise bad("region", "an AWS region such as eu-west-1")
        if self.endpoint_name is not None:
            check_model_name(self.endpoint_name)  # endpoint names follow the model naming rule
        if not isinstance(self.prefix, str) or self.prefix.startswith("/") or "//" in self.prefix:
            raise bad("prefix", "an S3 key prefix without leading or doubled '/'")
        object.__setattr__(self, "prefix", self.prefix.strip("/"))
        if not isinstance(self.instance_type, str) or not self.instance_type.startswith("ml."):
            raise bad("instance_type", "a SageMaker instance type such as ml.m5.large")
        for key, low, high in (
            ("instance_count", 1, 100),
            ("canary_size_percent", 1, 50),
            ("canary_wait_s", 0, 3600),
            ("termination_wait_s", 0, 3600),
            ("max_attempts", 1, 20),
        ):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise bad(key, f"an integer from {low} to {high}")
        for key in ("ready_timeout_s", "poll_s"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise bad(key, "a positive number")
        if self.serving not in SERVING_MODES:
            raise bad("serving", f"one of {', '.join(SERVING_MODES)}")
        alarms = self.rollback_alarms
        if isinstance(alarms, str):
            alarms = tuple(a.strip() for a in alarms.split(",") if a.strip())  # a comma list from a flag
        if not isinstance(alarms, (list, tuple)) or not all(isinstance(a, str) and a.strip() for a in alarms):
            raise bad("rollback_alarms", "a list of CloudWatch alarm names")
        if len(alarms) > 10:  # the AutoRollbackConfiguration limit
            raise bad("rollback_alarms", "at most 10 alarm names")
        object.__setattr__(self, "rollback_alarms", tuple(alarms))

    def require_deploy_settings(self) -> None:
        """Refuse to deploy without the image, role and bucket (reading endpoints needs none of them).

        Raises:
            InvalidInputError: naming the missing settings and the flags that give them.
        """
        missing = [key for key in ("image_uri", "role_arn", "bucket") if getattr(self, key) is None]
        if missing:
            flags = ", ".join(f"--{key.replace('_', '-')}" for key in missing)
            raise InvalidInputError(
                f"sagemaker deploy needs {', '.join(missing)} (give {flags} or put them in --deploy-config)"
            )


_QUANTITY = re.compile(r"^\d+(\.\d+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
KSERVE_MODES = ("auto", "Serverless", "Standard", "RawDeployment", "Knative")
SCALE_METRICS = ("cpu", "memory", "concurrency", "rps")


@dataclass(frozen=True)
class KServeConfig(TargetConfig):
    """The KServe target: ``serving.kserve.io/v1beta1`` InferenceServices by server-side apply (docs/kserve.md).

    The cluster comes from ``kubeconfig`` (and ``context``), else the in-cluster service account, else the
    default kubeconfig (``KUBECONFIG`` or ``~/.kube/config``), read once when the target is built.

    Attributes:
        namespace: namespace of the InferenceServices (and of the project's ServingRuntime).
        kubeconfig: kubeconfig file (None: in-cluster config, else the default kubeconfig).
        context: kubeconfig context (None: the file's current context).
        service_account: ServiceAccount the predictor pods run as (credentials for ``storageUri``); None: the
            namespace's default.
        storage_container: ClusterStorageContainer KServe's storage initializer uses for these predictors
            (``spec.predictor.storageContainerName``: the chart's ``hybridml-restricted`` meets Pod Security
            ``restricted``); None: KServe matches one by the URI's scheme.
        image: the project's predictor image (serving/Dockerfile), run by the ``hybridml`` ServingRuntime.
        runtime: ServingRuntime the predictor uses: ``hybridml`` (the target applies it, with ``image``) or the
            name of the user's own runtime, which must already exist and support the ``hybridml`` model format.
        cpu_request, cpu_limit, memory_request, memory_limit: the predictor container's resources.
        min_replicas: fewest predictor pods; 0 (scale to zero) only in Serverless mode.
        max_replicas: most predictor pods.
        scale_metric: ``cpu``, ``memory``, ``concurrency`` or ``rps`` (the last two in Serverless mode only);
            None: KServe's default.
        scale_target: target value of ``scale_metric`` (None: KServe's default).
        storage_uri_prefix: where the cluster reads bundles that are not already at a URI it can read
            (``s3://``, ``gs://``, ``pvc://``, ``https://``...): ``PREFIX/NAME/VERSION``; None refuses them.
        mode: ``auto`` (detect from the object, then KServe's ``inferenceservice-config``), or force
            ``Serverless`` / ``Standard`` (``RawDeployment`` is Standard's older name, ``Knative`` Serverless's
            newer one).
        kserve_namespace: namespace of KServe's ``inferenceservice-config`` ConfigMap.
        ready_timeout_s: how long one deploy, traffic change, promote or rollback may take to become Ready.
        poll_s: longest pause between two status reads (they start at 0.05 s and double).
        field_manager: server-side apply field manager.
        max_attempts: attempts per API call answered 429/502/503/504 (1: no retry).
    """

    kind: ClassVar[str] = "kserve"

    namespace: str = "default"
    kubeconfig: str | None = None
    context: str | None = None
    service_account: str | None = None
    storage_container: str | None = None
    image: str = "ghcr.io/hybridml/predictor:latest"
    runtime: str = "hybridml"
    cpu_request: str = "500m"
    cpu_limit: str = "1"
    memory_request: str = "512Mi"
    memory_limit: str = "1Gi"
    min_replicas: int = 1
    max_replicas: int = 3
    scale_metric: str | None = None
    scale_target: int | None = None
    storage_uri_prefix: str | None = None
    mode: str = "auto"
    kserve_namespace: str = "kserve"
    ready_timeout_s: float = 600.0
    poll_s: float = 10.0
    field_manager: str = "hybridml"
    max_attempts: int = 5

    def __post_init__(self) -> None:
        def bad(key: str, wanted: str) -> InvalidInputError:
            return InvalidInputError(f"kserve deploy config: {key} must be {wanted}, got {getattr(self, key)!r}")

        for key in ("namespace", "kserve_namespace"):
            value = getattr(self, key)
            if not isinstance(value, str) or not _DNS_LABEL.fullmatch(value):
                raise bad(key, "a Kubernetes namespace name")
        for key in ("runtime", "service_account", "storage_container"):
            value = getattr(self, key)
            if (value is not None or key == "runtime") and (
                not isinstance(value, str) or not _DNS_SUBDOMAIN.fullmatch(value)
            ):
                raise bad(key, "a Kubernetes object name")
        for key in ("kubeconfig", "context", "image", "field_manager"):
            value = getattr(self, key)
            if (value is not None or key in ("image", "field_manager")) and (
                not isinstance(value, str) or not value.strip()
            ):
                raise bad(key, "a non-empty string")
        for key in ("cpu_request", "cpu_limit", "memory_request", "memory_limit"):
            value = getattr(self, key)
            if not isinstance(value, str) or not _QUANTITY.fullmatch(value):
                raise bad(key, "a Kubernetes quantity such as 500m, 1 or 512Mi")
        for key, low, high in (("min_replicas", 0, 1000), ("max_replicas", 1, 1000), ("max_attempts", 1, 20)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise bad(key, f"an integer from {low} to {high}")
        if self.max_replicas < self.min_replicas:
            raise bad("max_replicas", f"at least min_replicas ({self.min_replicas})")
        if self.scale_metric is not None and self.scale_metric not in SCALE_METRICS:
            raise bad("scale_metric", f"one of {', '.join(SCALE_METRICS)}")
        target = self.scale_target
        if target is not None and (isinstance(target, bool) or not isinstance(target, int) or target < 1):
            raise bad("scale_target", "a positive integer")
        prefix = self.storage_uri_prefix
        if prefix is not None and (not isinstance(prefix, str) or "://" not in prefix or prefix.startswith("file:")):
            raise bad("storage_uri_prefix", "a URI the cluster reads, such as s3://bucket/models")
        if prefix is not None:
            object.__setattr__(self, "storage_uri_prefix", prefix.rstrip("/"))
        if self.mode not in KSERVE_MODES:
            raise bad("mode", f"one of {', '.join(KSERVE_MODES)}")
        for key in ("ready_timeout_s", "poll_s"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise bad(key, "a positive number")


CONFIGS: dict[str, type[TargetConfig]] = {"local": LocalConfig, "kserve": KServeConfig, "sagemaker": SageMakerConfig}


def config_from(name: str | None, options: Mapping[str, Any], settings: Settings) -> TargetConfig:
    """The typed configuration of target ``name`` from loosely typed ``options`` (flags, JSON or YAML).

    Args:
        name: ``local``, ``kserve`` or ``sagemaker``; None takes ``options["target"]``, else ``local``.
        options: the target's settings by field name; a ``target`` key must agree with ``name``.
        settings: the process settings, for defaults (the local target's state lives under the home).

    Raises:
        InvalidInputError: an unknown target, one not built yet, an unknown key (named) or a bad value.
    """
    options = dict(options)
    named_in_options = options.pop("target", None)
    if name and named_in_options is not None and named_in_options != name:
        raise InvalidInputError(f"deploy config is for target {named_in_options!r}, not {name!r}")
    name = name or named_in_options or "local"
    if name not in TARGETS:
        raise InvalidInputError(f"unknown deploy target {name!r} (choose from {', '.join(TARGETS)})")
    if name not in BUILT:
        raise InvalidInputError(f"deploy target {name!r} is not built yet (use {', '.join(map(repr, BUILT))})")
    config_class = CONFIGS[name]
    fields = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise InvalidInputError(f"unknown {name} deploy config key {unknown[0]!r} (known: {', '.join(sorted(fields))})")
    if config_class is LocalConfig:
        options.setdefault("state_dir", settings.deployments_dir)
    try:
        return config_class(**options)
    except TypeError as exc:  # a value of a type that __post_init__ cannot even look at
        raise InvalidInputError(f"bad {name} deploy config: {exc}") from exc


def parse_config(text: str, source: str = "deploy config") -> dict[str, Any]:
    """A JSON or YAML object of target options (``""`` is no options); ``source`` names it in errors.

    Raises:
        InvalidInputError: not JSON/YAML, or not an object with string keys.
    """
    if not text.strip():
        return {}
    import yaml  # JSON is YAML, so one parser reads both (and says where a file is broken)

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{source} is neither JSON nor YAML: {str(exc).splitlines()[0]}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        raise InvalidInputError(f"{source} must be an object of option names to values, got {type(raw).__name__}")
    return raw


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The target options in a JSON or YAML file (``--deploy-config FILE``).

    Raises:
        NotFoundError: no such file.
        InvalidInputError: it is not a JSON/YAML object.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"deploy config file not found: {path}")
    return parse_config(path.read_text(), source=f"deploy config {path}")
