"""One factory: a target's typed configuration in, the target out (adding a target touches only this file)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, overload

from hybridml.deploy.config import KServeConfig, LocalConfig, SageMakerConfig, TargetConfig
from hybridml.deploy.contract import DeployTarget
from hybridml.deploy.fetch import Fetch, fetch_artifact
from hybridml.errors import InvalidInputError

if TYPE_CHECKING:
    from hybridml.deploy.kserve import KServeTarget
    from hybridml.deploy.local import LocalTarget
    from hybridml.deploy.sagemaker import SageMakerTarget


@overload
def make_target(
    config: LocalConfig,
    *,
    fetch: Fetch = ...,
    clock: Callable[[], float] = ...,
    sleep: Callable[[float], None] = ...,
) -> LocalTarget: ...


@overload
def make_target(
    config: KServeConfig,
    *,
    fetch: Fetch = ...,
    clock: Callable[[], float] = ...,
    sleep: Callable[[float], None] = ...,
) -> KServeTarget: ...


@overload
def make_target(
    config: SageMakerConfig,
    *,
    fetch: Fetch = ...,
    clock: Callable[[], float] = ...,
    sleep: Callable[[float], None] = ...,
) -> SageMakerTarget: ...


@overload
def make_target(
    config: TargetConfig,
    *,
    fetch: Fetch = ...,
    clock: Callable[[], float] = ...,
    sleep: Callable[[float], None] = ...,
) -> DeployTarget: ...


def make_target(
    config: TargetConfig,
    *,
    fetch: Fetch = fetch_artifact,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> DeployTarget:
    """The deploy target that ``config`` describes.

    Args:
        config: a target's typed configuration (see :func:`hybridml.deploy.config_from`).
        fetch: how the target turns a model reference's URI into local files, where it needs them.
        clock: monotonic clock, injectable for tests.
        sleep: sleep function, injectable for tests.

    Raises:
        InvalidInputError: a configuration of a target that is not built.
    """
    if isinstance(config, LocalConfig):
        from hybridml.deploy.local import LocalTarget  # the server stack is imported only when used

        return LocalTarget(config, fetch=fetch, clock=clock, sleep=sleep)
    if isinstance(config, KServeConfig):
        from hybridml.deploy.kserve import KServeTarget  # the kubernetes client is imported only when used

        return KServeTarget(config, clock=clock, sleep=sleep)
    if isinstance(config, SageMakerConfig):
        from hybridml.deploy.sagemaker import SageMakerTarget  # boto3 is imported only when used

        return SageMakerTarget(config, fetch=fetch, clock=clock, sleep=sleep)
    raise InvalidInputError(f"deploy target {config.kind!r} is not built yet (use 'local', 'kserve' or 'sagemaker')")
