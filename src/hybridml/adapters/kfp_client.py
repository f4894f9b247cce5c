"""Kubeflow Pipelines edge: one ``kfp.Client`` factory, the compiled pipeline's parameters, upload, run, schedule.

Used by ``hybridml submit``/``schedule`` and by the trigger's ``KfpLauncher``. Everything a user types is checked
here against the compiled YAML (parameter names and types, cron fields, intervals) before any request is sent.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridml.errors import ConflictError, HybridmlError, InvalidInputError, NotFoundError, NotReadyError

# The compiled pipeline, committed beside its definition (read by path: importing hybridml.pipelines loads kfp).
COMPILED_PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "hybridml_training.yaml"
TOKEN_ENV = "KF_PIPELINES_TOKEN"  # noqa: S105 - the name of the variable, not a token

# Where the pipeline's state lives on a cluster installed from manifests/ or the chart (namespace ``hybridml``; the
# MLflow Service is ``hybridml-mlflow``, manifests/base/mlflow.yaml): the compiled defaults (empty tracking URI,
# in-memory Optuna, the local target) would vanish with each pod, and steps/cluster.py refuses them there. The one
# place that decides what a Kubeflow run gets unless --param says otherwise.
CLUSTER_NAMESPACE = "hybridml"
CLUSTER_DEFAULTS: dict[str, Any] = {
    "tracking_uri": f"http://hybridml-mlflow.{CLUSTER_NAMESPACE}.svc.cluster.local:5000",
    "deploy_target": "kserve",
    # storage_container: the chart's ClusterStorageContainer, whose storage initializer passes Pod Security
    # restricted (KServe's default one does not, so no predictor pod would start in the chart's namespace).
    "deploy_config": json.dumps(
        {"target": "kserve", "namespace": CLUSTER_NAMESPACE, "storage_container": "hybridml-restricted"}
    ),
    # The chart's predictor account: the predictor pods read the model's storageUri with its credentials.
    "kserve_service_account": "hybridml-predictor",
    # The chart's PostgreSQL for Optuna; the password comes from PGPASSWORD in the step's environment (a Secret),
    # never from a run parameter, which the KFP UI shows to everyone.
    "hpo_storage": f"postgresql+psycopg2://optuna@hybridml-postgresql.{CLUSTER_NAMESPACE}.svc.cluster.local:5432/optuna",
}

_KFP_TYPES: dict[str, type] = {"STRING": str, "NUMBER_INTEGER": int, "NUMBER_DOUBLE": float, "BOOLEAN": bool}


def _spec(package: Path) -> tuple[str, dict[str, str]]:
    if not package.is_file():
        raise InvalidInputError(f"compiled pipeline not found: {package} (hybridml compile -o FILE)")
    stat = package.stat()
    name, types = _read_spec(str(package), stat.st_mtime_ns, stat.st_size)
    return name, dict(types)


@functools.lru_cache(maxsize=4)
def _read_spec(package: str, _mtime_ns: int, _size: int) -> tuple[str, dict[str, str]]:
    # Keyed by modification time and size: a recompiled file is read again. The C loader: the file is ~2000 lines.
    # The pipeline spec is the first document; a second one, when there, is the platform (Kubernetes) config.
    import yaml

    try:
        safe_loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        doc = next(yaml.load_all(Path(package).read_text(), Loader=safe_loader))  # nosec B506 - a safe loader
        params = doc["root"]["inputDefinitions"]["parameters"]
        types = {str(name): str(spec["parameterType"]) for name, spec in params.items()}
        return str(doc["pipelineInfo"]["name"]), types
    except (yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidInputError(f"{package} is not a compiled KFP pipeline ({type(exc).__name__})") from None


def pipeline_parameters(package: Path = COMPILED_PIPELINE) -> dict[str, str]:
    """The compiled pipeline's parameters and their KFP types (``STRING``, ``NUMBER_INTEGER``...).

    Raises:
        InvalidInputError: the package is missing or is not a compiled pipeline.
    """
    return _spec(package)[1]


def pipeline_name(package: Path = COMPILED_PIPELINE) -> str:
    """The compiled pipeline's name (``pipelineInfo.name``): the name it is uploaded under."""
    return _spec(package)[0]


def _coerce(name: str, value: Any, kind: str) -> Any:
    want: Any = _KFP_TYPES.get(kind, str)
    if not isinstance(value, str):
        # bool is an int in Python: only an exact type match passes, ints widen to floats.
        if type(value) is want or (want is float and type(value) is int):
            return float(value) if want is float else value
        raise InvalidInputError(f"parameter {name} takes {kind}, got {value!r}")
    if want is str:
        return value
    if want is bool:
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise InvalidInputError(f"parameter {name} takes true or false, got {value!r}")
    try:
        return want(value)
    except ValueError:
        raise InvalidInputError(f"parameter {name} takes {kind}, got {value!r}") from None


def check_arguments(arguments: Mapping[str, Any], package: Path = COMPILED_PIPELINE) -> dict[str, Any]:
    """``arguments`` with each value converted to its parameter's type.

    Raises:
        InvalidInputError: a name the pipeline does not have, or a value of the wrong type.
    """
    known = pipeline_parameters(package)
    checked: dict[str, Any] = {}
    for name, value in arguments.items():
        if name not in known:
            names = ", ".join(sorted(known))
            raise InvalidInputError(f"unknown pipeline parameter {name!r}; the pipeline has: {names}")
        checked[name] = _coerce(name, value, known[name])
    return checked


def parse_params(pairs: Sequence[str], option: str = "--param") -> dict[str, str]:
    """``KEY=VALUE`` strings as a dict (a later key wins); a value may hold ``=``.

    Raises:
        InvalidInputError: a string without ``=`` or with an empty key.
    """
    parsed: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"{option} takes KEY=VALUE, got {pair!r}")
        parsed[key.strip()] = value
    return parsed


def run_arguments(
    params: Mapping[str, Any], *, cluster_defaults: bool = True, package: Path = COMPILED_PIPELINE
) -> dict[str, Any]:
    """What a Kubeflow run gets: the cluster defaults (unless turned off), then ``params``, checked and typed."""
    merged = {**(CLUSTER_DEFAULTS if cluster_defaults else {}), **params}
    return check_arguments(merged, package)


# ------------------------------------------------------------------------------------------------------- schedules

# KFP's scheduler reads cron with a seconds field first (robfig/cron: sec min hour dom month dow).
_CRON_FIELDS = (("second", 0, 59), ("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12))
_CRON_DOW = ("day of week", 0, 6)
_MONTHS = {
    m: i + 1 for i, m in enumerate(("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"))
}
_DAYS = {d: i for i, d in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
_MIN_INTERVAL_S = 60


def _cron_value(text: str, label: str, low: int, high: int, names: Mapping[str, int]) -> int:
    value = names.get(text.upper()) if text.isalpha() else (int(text) if text.isdigit() else None)
    if value is None or not low <= value <= high:
        raise InvalidInputError(f"cron {label} field: {text!r} is not in {low}-{high}")
    return value


def _cron_field(field: str, label: str, low: int, high: int, names: Mapping[str, int]) -> None:
    for part in field.split(","):
        base, slash, step = part.partition("/")
        if slash and (not step.isdigit() or int(step) == 0):
            raise InvalidInputError(f"cron {label} field: step {step!r} must be a positive number")
        if base in ("*", "?"):
            continue
        start, dash, end = base.partition("-")
        first = _cron_value(start, label, low, high, names)
        if dash and _cron_value(end, label, low, high, names) < first:
            raise InvalidInputError(f"cron {label} field: range {base!r} ends before it starts")


def normalize_cron(expression: str) -> str:
    """A cron expression as KFP's scheduler reads it: 6 fields (5 fields get ``0`` seconds in front).

    Raises:
        InvalidInputError: not 5 or 6 fields, or a field out of range, naming the field.
    """
    fields = expression.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise InvalidInputError(
            f"cron expression {expression!r} has {len(fields)} fields; give 5 (min hour dom month dow) or 6 (sec first)"
        )
    for field, (label, low, high) in zip(fields, (*_CRON_FIELDS, _CRON_DOW), strict=True):
        names = _MONTHS if label == "month" else _DAYS if label == "day of week" else {}
        if not re.fullmatch(r"[0-9A-Za-z*?,/\-]+", field):
            raise InvalidInputError(f"cron {label} field: {field!r} has characters cron does not read")
        _cron_field(field, label, low, high, names)
    return " ".join(fields)


_DURATION = re.compile(r"(\d+)([dhms])")
_UNIT_S = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> int:
    """``1d``, ``6h``, ``1h30m``, ``90s`` or a plain number of seconds, as seconds (at least 60).

    Raises:
        InvalidInputError: not a duration, or shorter than a minute.
    """
    text = text.strip().lower()
    if text.isdigit():
        seconds = int(text)
    elif text and _DURATION.sub("", text) == "":
        seconds = sum(int(n) * _UNIT_S[unit] for n, unit in _DURATION.findall(text))
    else:
        raise InvalidInputError(f"--every takes a duration like 1d, 6h, 1h30m or 90s, got {text!r}")
    if seconds < _MIN_INTERVAL_S:
        raise InvalidInputError(f"--every {text}: a recurring run must be at least {_MIN_INTERVAL_S}s apart")
    return seconds


# --------------------------------------------------------------------------------------------------------- client


def read_token(token_file: Path | None, env: Mapping[str, str] | None = None) -> str | None:
    """The bearer token: the file's content (stripped), else ``KF_PIPELINES_TOKEN``, else None.

    Raises:
        InvalidInputError: the file cannot be read or is empty (the token itself never appears in a message).
    """
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise InvalidInputError(f"cannot read --token-file {token_file}: {exc.strerror}") from None
        if not token:
            raise InvalidInputError(f"--token-file {token_file} is empty")
        return token
    return (os.environ if env is None else env).get(TOKEN_ENV) or None


def make_client(host: str, *, token: str | None = None, namespace: str | None = None) -> Any:
    """A ``kfp.Client`` for ``host``; ``token`` is sent as ``Authorization: Bearer`` (``existing_token``).

    Only the options given are passed, so the client behaves as ``kfp.Client(host=host)`` by default. With a
    namespace the client does not probe ``healthz`` for multi-user mode (the namespace says it).
    """
    if not host:
        raise InvalidInputError("the KFP API host is required (--host URL)")
    import kfp

    options: dict[str, Any] = {"host": host}
    if token:
        options["existing_token"] = token
    if namespace:
        options["namespace"] = namespace
    with _quiet(), api_errors(host):
        warnings.filterwarnings("ignore", category=FutureWarning, module="kfp")
        return kfp.Client(**options)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # kfp.Client prints "Run details: <link>" on stdout; keep stdout for the command's own output.
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        yield


@contextlib.contextmanager
def api_errors(host: str) -> Iterator[None]:
    """Turn kfp_server_api and connection errors into hybridml errors of one line (no token, no body dump)."""
    try:
        yield
    except HybridmlError:
        raise
    except Exception as exc:
        status = getattr(exc, "status", None)
        if isinstance(status, int) and status:
            reason = _api_message(getattr(exc, "body", None)) or str(getattr(exc, "reason", "") or "")
            message = f"KFP API at {host} answered {status}: {reason}".rstrip(": ")
            if status == 404:
                raise NotFoundError(message) from None
            if status == 409:
                raise ConflictError(message) from None
            if status in (400, 401, 403, 422):
                raise InvalidInputError(message) from None
            raise NotReadyError(message) from None
        if type(exc).__module__.startswith(("urllib3", "kfp_server_api")) or isinstance(exc, (OSError, TimeoutError)):
            raise NotReadyError(f"KFP API at {host} is not reachable ({type(exc).__name__})") from None
        raise


def _api_message(body: Any) -> str:
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    if not isinstance(body, str):
        return ""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body.strip().splitlines()[0][:200] if body.strip() else ""
    if isinstance(parsed, dict):
        return str(parsed.get("message") or parsed.get("error") or "")[:200]
    return ""


def _name_filter(name: str) -> str:
    # The same filter kfp.Client builds for names (operation 1: EQUALS in filter.proto).
    return json.dumps({"predicates": [{"operation": 1, "key": "display_name", "stringValue": name}]})


@dataclass(frozen=True)
class Published:
    """Where the compiled pipeline lives on the KFP server."""

    pipeline_id: str
    version_id: str
    version_name: str
    uploaded: bool


def publish(client: Any, package: Path, name: str, *, namespace: str | None = None) -> Published:
    """Upload ``package`` as a version of pipeline ``name`` named by its content hash, once per content.

    The pipeline is made at the first upload (KFP gives it a first version named like the pipeline; the run
    uses the hashed version uploaded beside it, so every version a run names is found by content later). The
    same file submitted again finds its version and uploads nothing.
    """
    digest = hashlib.sha256(package.read_bytes()).hexdigest()[:12]
    version_name = f"{name}-{digest}"
    with _quiet():
        found = client.list_pipelines(filter=_name_filter(name), namespace=namespace).pipelines or []
        if found:
            pipeline_id = found[0].pipeline_id
            same = client.list_pipeline_versions(pipeline_id, filter=_name_filter(version_name)).pipeline_versions
            if same:
                return Published(pipeline_id, same[0].pipeline_version_id, version_name, False)
        else:
            pipeline_id = client.upload_pipeline(str(package), pipeline_name=name, namespace=namespace).pipeline_id
        version = client.upload_pipeline_version(str(package), version_name, pipeline_id=pipeline_id)
        return Published(pipeline_id, version.pipeline_version_id, version_name, True)


def experiment_id(client: Any, name: str, namespace: str | None) -> str:
    """The id of experiment ``name`` in ``namespace``, made when missing."""
    with _quiet():
        return str(client.create_experiment(name, namespace=namespace).experiment_id)


def start_run(
    client: Any,
    published: Published,
    *,
    experiment: str,
    run_name: str,
    arguments: Mapping[str, Any],
    namespace: str | None = None,
    service_account: str | None = None,
) -> str:
    """Start one run of the published pipeline; returns the run id."""
    exp = experiment_id(client, experiment, namespace)
    with _quiet():
        run = client.run_pipeline(
            exp,
            run_name,
            params=dict(arguments),
            pipeline_id=published.pipeline_id,
            version_id=published.version_id,
            service_account=service_account,
        )
    return str(run.run_id)


def create_schedule(
    client: Any,
    published: Published,
    *,
    experiment: str,
    name: str,
    arguments: Mapping[str, Any],
    cron: str | None = None,
    interval_s: int | None = None,
    namespace: str | None = None,
    max_concurrency: int = 1,
    catchup: bool = False,
    service_account: str | None = None,
) -> str:
    """Create a recurring run (cron in KFP's 6-field form, or an interval); returns its id."""
    if (cron is None) == (interval_s is None):
        raise InvalidInputError("a schedule takes exactly one of --cron and --every")
    exp = experiment_id(client, experiment, namespace)
    with _quiet():
        job = client.create_recurring_run(
            exp,
            name,
            cron_expression=cron,
            interval_second=interval_s,
            max_concurrency=max_concurrency,
            no_catchup=not catchup,
            params=dict(arguments),
            pipeline_id=published.pipeline_id,
            version_id=published.version_id,
            service_account=service_account,
        )
    return str(job.recurring_run_id)
