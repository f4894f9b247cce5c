"""The contract every deployment target (local process, KServe on Kubernetes, SageMaker) implements."""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hybridml.errors import InvalidInputError, NotReadyError


@dataclass(frozen=True)
class Deployment:
    """What a target reports about one named endpoint.

    Attributes:
        name: deployment (and model) name.
        target: which target serves it, e.g. ``local``, ``kserve``, ``sagemaker``.
        endpoint: base URL of the model server (``/v2/models/NAME/infer`` lives under it).
        stable_version: version that gets the traffic the canary does not.
        canary_version: version under trial, or None.
        canary_percent: share of requests (0-100) the canary answers; 0 without a canary.
        ready: whether the endpoint answers its readiness check now.
        detail: one line for a person: why it is not ready, or what serves.
    """

    name: str
    target: str
    endpoint: str
    stable_version: str
    canary_version: str | None
    canary_percent: int
    ready: bool
    detail: str


def check_traffic_percent(traffic_percent: int) -> int:
    """Return ``traffic_percent`` if it is an int in [1, 100], else raise InvalidInputError."""
    if isinstance(traffic_percent, bool) or not isinstance(traffic_percent, int) or not 1 <= traffic_percent <= 100:
        raise InvalidInputError(f"traffic percent must be an integer from 1 to 100, got {traffic_percent!r}")
    return traffic_percent


class DeployTarget(abc.ABC):
    """Where approved model versions are served; one implementation per platform, all with these semantics.

    * :meth:`deploy` with ``traffic_percent=100`` replaces the stable version (and drops any canary);
      with less it adds or replaces the canary, which then answers that share of requests while the stable
      version answers the rest. A deploy that fails leaves the previous deployment serving.
    * :meth:`promote` makes the canary the stable version at 100%; :meth:`rollback` drops the canary.
    * :meth:`status` never waits; :meth:`wait_until_ready` polls it (the DescribeEndpoint / WaitForEndpoint loop).

    Args:
        clock: monotonic clock in seconds, injectable for tests.
        sleep: sleep function, injectable for tests.
    """

    target_name = "abstract"

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self._clock = clock
        self._sleep = sleep

    @abc.abstractmethod
    def deploy(self, name: str, version: str | int, model_dir: Path | str, traffic_percent: int = 100) -> Deployment:
        """Serve the bundle in ``model_dir`` as ``version`` of endpoint ``name``.

        ``version`` may be a registry version number; it is reported as a string.

        Raises:
            InvalidInputError: bad name, bundle or ``traffic_percent`` (not in [1, 100]); a canary without a stable.
            NotReadyError: the new server did not come up (the previous deployment keeps serving).
        """

    @abc.abstractmethod
    def status(self, name: str) -> Deployment:
        """Current state of endpoint ``name`` without waiting.

        Raises:
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
        """Stop serving ``name`` and remove its state.

        Raises:
            NotFoundError: no deployment of that name.
        """

    @abc.abstractmethod
    def list(self) -> list[Deployment]:
        """All deployments of this target, sorted by name."""

    def wait_until_ready(self, name: str, timeout_s: float, poll_s: float = 0.2) -> Deployment:
        """Poll :meth:`status` until the deployment is ready.

        Raises:
            NotFoundError: no deployment of that name.
            NotReadyError: not ready within ``timeout_s``; the message carries the last status detail.
        """
        deadline = self._clock() + timeout_s
        while True:
            current = self.status(name)
            if current.ready:
                return current
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise NotReadyError(
                    f"deployment {name!r} not ready after {timeout_s:g}s (last status: {current.detail})"
                )
            self._sleep(min(poll_s, remaining))
