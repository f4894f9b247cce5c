"""What the contract suite hands each test: the bundles, and a target with the way to point it at a bundle."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hybridml.deploy import DeployTarget, ModelRef


@dataclass
class Bundles:
    """Bundles built once per session: two versions with the same features, one with other features, one broken."""

    v1: Path
    v2: Path
    other_features: Path
    broken: Path
    rows: list[dict[str, float]]


@dataclass
class Harness:
    """A target under test, and the target-specific means the suite needs.

    Attributes:
        target: the target under test.
        ref: ``ref(name, version, bundle)``: a reference to ``bundle`` that this target can fetch.
        with_clock: ``with_clock(clock, sleep)``: another target object over the same deployments whose clock
            and sleep are injected (for budget tests).
        break_serving: ``break_serving(name)``: make a deployment stop answering ready (its server crashes).
    """

    target: DeployTarget
    ref: Callable[[str, str, Path], ModelRef]
    with_clock: Callable[[Callable[[], float], Callable[[float], None]], DeployTarget]
    break_serving: Callable[[str], None]


class FakeClock:
    """A monotonic clock that only sleeping moves forward."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
