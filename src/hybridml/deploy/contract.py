"""The deploy contract: a model passed by reference, what a target reports, and what every target must do."""

from __future__ import annotations

import abc
import builtins
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from hybridml.core.profile import ReferenceProfile
from hybridml.core.schema import FeatureSchema
from hybridml.errors import InvalidInputError, NotReadyError

PROTOCOLS = ("v1", "v2")
# wait_until_ready polls at 0.05 s, 0.1 s, 0.2 s, ... up to MAX_POLL_S: quick for a local server that is ready
# in well under a second, and gentle on an API (Kubernetes, SageMaker) when the wait runs into minutes.
FIRST_POLL_S = 0.05
MAX_POLL_S = 2.0
_BACKOFF = 2.0


@dataclass(frozen=True)
class ModelRef:
    """A registered model version, passed by reference: each target fetches the files its own way.

    The local target copies or downloads the bundle into its state directory; a KServe target hands
    ``artifact_uri`` on as the ``storageUri``; a SageMaker target packs a ``model.tar.gz`` in S3.

    Attributes:
        name: registered model name (the naming rule of :mod:`hybridml.core.naming` applies where it is served).
        version: version label; an int is stored as its string.
        artifact_uri: where the bundle directory lives: ``file://``, ``s3://``, or an MLflow URI
            (``models:/``, ``mlflow-artifacts:``) that a target reads through an injected fetch function.
        schema: the bundle's feature schema (the request contract of the endpoint).
        profile: the bundle's reference profile, or None for a bundle saved without one.
        pipeline_run_id: the pipeline run that produced the version (empty: unknown); targets that annotate what
            they create link back to it.
    """

    name: str
    version: str
    artifact_uri: str
    schema: FeatureSchema
    profile: ReferenceProfile | None = None
    pipeline_run_id: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.version, int) and not isinstance(self.version, bool):
            object.__setattr__(self, "version", str(self.version))
        if not isinstance(self.artifact_uri, str) or not self.artifact_uri.strip():
            raise InvalidInputError(f"model reference {self.name!r}: artifact_uri must be a non-empty URI")
        if not isinstance(self.schema, FeatureSchema):
            raise InvalidInputError(f"model reference {self.name!r}: schema must be a FeatureSchema")


@dataclass(frozen=True)
class Deployment:
    """What a target reports about one named endpoint.

    Attributes:
        name: deployment (and model) name.
        target: which target serves it, e.g. ``local``, ``kserve``, ``sagemaker``.
        endpoint: base URL of the model server (``/v2/models/NAME/infer`` lives under it).
        stable_version: version that gets the traffic the canary does not.
        canary_version: version under trial, or None.
        canary_percent: share of requests (0-100) the canary answers now; 0 without a canary, and 0 after a
            canary crashed and traffic fell back to stable.
        ready: whether the endpoint answers its readiness check now.
        detail: one line for a person: why it is not ready, or what serves.
        shadow_version: version that gets a copy of every request (answers only logged), or None.
    """

    name: str
    target: str
    endpoint: str
    stable_version: str
    canary_version: str | None
    canary_percent: int
    ready: bool
    detail: str
    shadow_version: str | None = None


def check_traffic_percent(traffic_percent: int) -> int:
    """Return ``traffic_percent`` if it is an int in [1, 100], else raise InvalidInputError."""
    if isinstance(traffic_percent, bool) or not isinstance(traffic_percent, int) or not 1 <= traffic_percent <= 100:
        raise InvalidInputError(f"traffic percent must be an integer from 1 to 100, got {traffic_percent!r}")
    return traffic_percent


def check_split_percent(percent: int) -> int:
    """Return ``percent`` if it is an int in [0, 100] (a canary's share of requests), else raise."""
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
        raise InvalidInputError(f"traffic percent must be an integer from 0 to 100, got {percent!r}")
    return percent


def check_rows(rows: Sequence[Mapping[str, Any]], protocol: str) -> None:
    """Refuse an empty batch, rows that are not objects, or an unknown protocol (what :meth:`invoke` takes)."""
    if protocol not in PROTOCOLS:
        raise InvalidInputError(f"unknown protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})")
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence) or not rows:
        raise InvalidInputError("invoke needs a non-empty list of rows")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise InvalidInputError(f"row {i} must be an object mapping feature names to values")


class DeployTarget(abc.ABC):
    """Where approved model versions are served; one implementation per platform, all with these semantics.

    Names follow :func:`hybridml.core.naming.check_model_name`; a name that breaks the rule is refused with
    InvalidInputError before anything changes. Each deployment has a stable version, at most one canary
    (answering a share of requests) and at most one shadow (getting a copy of every request; its answers
    are only logged, never returned).

    * :meth:`deploy` with ``traffic_percent=100`` replaces the stable version and drops any canary and
      shadow; with less it adds or replaces the canary, which then answers that share while the stable
      version answers the rest (the shadow stays). The target fetches the model from ``ref.artifact_uri``
      itself. A deploy that fails (a model that does not load, a server that does not come up) leaves the
      previous deployment serving, unchanged.
    * :meth:`set_traffic` changes the canary's share; :meth:`promote` makes the canary the stable version
      at 100%; :meth:`rollback` drops the canary; :meth:`shadow` adds, replaces or removes the shadow.
    * :meth:`status` never waits and reports the live state where the platform exposes it (a canary that
      crashed shows 0%); :meth:`wait_until_ready` polls it with exponential backoff within a time budget.
    * :meth:`invoke` scores rows through the endpoint: one score (positive-class probability) per row.
    * Calls on one target object are not thread-safe; one caller at a time per deployment.

    Args:
        clock: monotonic clock in seconds, injectable for tests.
        sleep: sleep function, injectable for tests.
    """

    target_name: ClassVar[str] = "abstract"

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self._clock = clock
        self._sleep = sleep

    @abc.abstractmethod
    def deploy(self, ref: ModelRef, traffic_percent: int = 100) -> Deployment:
        """Serve ``ref`` under the name ``ref.name``: as the stable version (100) or as a canary (1-99).

        Raises:
            InvalidInputError: a name breaking the naming rule; a bad version, bundle or ``traffic_percent``
                (not in [1, 100]); a canary without a stable version, or with other features than stable's.
            NotFoundError: nothing at ``ref.artifact_uri``.
            NotReadyError: the new version did not come up (the previous deployment keeps serving).
        """

    @abc.abstractmethod
    def set_traffic(self, name: str, percent: int) -> Deployment:
        """Give the canary ``percent`` (0-100) of new requests; the stable version answers the rest.

        Raises:
            InvalidInputError: ``percent`` is not an integer in [0, 100]; a bad name.
            NotFoundError: no deployment of that name.
            ConflictError: it has no canary.
        """

    @abc.abstractmethod
    def shadow(self, name: str, ref: ModelRef | None) -> Deployment:
        """Copy every request of ``name`` to ``ref`` (answers only logged); None removes the shadow.

        Raises:
            InvalidInputError: a bad name; a shadow with other features than stable's.
            NotFoundError: no deployment of that name, or nothing at ``ref.artifact_uri``.
            ConflictError: ``ref`` is None and there is no shadow to remove.
            NotReadyError: the shadow did not come up (the deployment keeps serving as before).
        """

    @abc.abstractmethod
    def status(self, name: str) -> Deployment:
        """Current state of ``name`` without waiting.

        Raises:
            InvalidInputError: a bad name.
            NotFoundError: no deployment of that name.
        """

    @abc.abstractmethod
    def promote(self, name: str) -> Deployment:
        """Make the canary the stable version at 100% of traffic.

        Raises:
            NotFoundError: no deployment of that name.
            ConflictError: it has no canary.
        """

    @abc.abstractmethod
    def rollback(self, name: str) -> Deployment:
        """Drop the canary so the stable version answers all traffic.

        Raises:
            NotFoundError: no deployment of that name.
            ConflictError: it has no canary.
        """

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Stop serving ``name`` and remove it; afterwards :meth:`status` raises NotFoundError.

        Raises:
            NotFoundError: no deployment of that name.
        """

    @abc.abstractmethod
    def list(self) -> builtins.list[Deployment]:
        """All deployments of this target, sorted by name."""

    @abc.abstractmethod
    def invoke(self, name: str, rows: Sequence[Mapping[str, Any]], protocol: str = "v2") -> builtins.list[float]:
        """Score ``rows`` (objects mapping feature names to values) through the endpoint of ``name``.

        Returns:
            One positive-class probability per row, in row order.

        Raises:
            InvalidInputError: no rows, a bad protocol, or rows the model refuses.
            NotFoundError: no deployment of that name.
            NotReadyError: the endpoint does not answer.
        """

    def wait_until_ready(
        self, name: str, timeout_s: float, *, first_poll_s: float = FIRST_POLL_S, max_poll_s: float = MAX_POLL_S
    ) -> Deployment:
        """Poll :meth:`status` until the deployment is ready, within a budget of ``timeout_s`` seconds.

        Polls at once, then after ``first_poll_s``, doubling the pause up to ``max_poll_s``. The budget is
        kept exactly: the last pause is cut to end at the deadline, where a final poll decides.

        Raises:
            InvalidInputError: a negative budget or non-positive poll interval.
            NotFoundError: no deployment of that name.
            NotReadyError: not ready within ``timeout_s``; the message carries the last status detail.
        """
        if not timeout_s >= 0:
            raise InvalidInputError(f"timeout must be zero or more seconds, got {timeout_s!r}")
        if not 0 < first_poll_s <= max_poll_s:
            raise InvalidInputError(f"poll intervals must satisfy 0 < first <= max, got {first_poll_s}, {max_poll_s}")
        deadline = self._clock() + timeout_s
        pause = first_poll_s
        while True:
            current = self.status(name)
            if current.ready:
                return current
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise NotReadyError(
                    f"deployment {name!r} not ready after {timeout_s:g}s (last status: {current.detail})"
                )
            self._sleep(min(pause, remaining))
            pause = min(pause * _BACKOFF, max_poll_s)
