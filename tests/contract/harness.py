"""What the contract suite hands each test: the bundles, and a target with the way to point it at a bundle."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hybridml.deploy import Deployment, DeployTarget, ModelRef
from hybridml.errors import NotFoundError


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
        missing: what this target (or its test bed) cannot do, each with the reason, e.g. ``canary beside a
            shadow``; :meth:`needs` skips the rest of a test then, printing the reason.
    """

    target: DeployTarget
    ref: Callable[[str, str, Path], ModelRef]
    with_clock: Callable[[Callable[[], float], Callable[[float], None]], DeployTarget]
    break_serving: Callable[[str], None]
    missing: dict[str, str] = field(default_factory=dict)

    def needs(self, capability: str) -> None:
        """Skip the rest of the test, printing the reason, if this target or its test bed lacks ``capability``."""
        if capability in self.missing:
            pytest.skip(
                f"{self.target.target_name} (or its test bed) cannot do {capability}: {self.missing[capability]}"
            )


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


class ScriptedTarget(DeployTarget):
    """A target serving only ``m`` that becomes ready on poll number ``ready_on`` (1-based; None: never).

    Each status call takes ``poll_cost_s`` of the fake clock; the detail is ``poll N``. The unit tests of
    ``wait_until_ready`` drive it; everything but status is out of their scope.
    """

    target_name = "scripted"

    def __init__(self, clock: FakeClock, ready_on: int | None = None, poll_cost_s: float = 0.0) -> None:
        super().__init__(clock=clock, sleep=clock.sleep)
        self.clock = clock
        self.ready_on = ready_on
        self.poll_cost_s = poll_cost_s
        self.polled_at: builtins.list[float] = []

    def status(self, name: str) -> Deployment:
        if name != "m":
            raise NotFoundError(f"no deployment {name!r}")
        if len(self.polled_at) >= 10_000:
            raise AssertionError("wait_until_ready kept polling past any budget")
        self.polled_at.append(self.clock.now)
        self.clock.now += self.poll_cost_s
        ready = self.ready_on is not None and len(self.polled_at) >= self.ready_on
        return Deployment(name, "scripted", "http://x", "1", None, 0, ready, f"poll {len(self.polled_at)}")

    def deploy(self, ref: ModelRef, traffic_percent: int = 100) -> Deployment:
        raise NotImplementedError

    def set_traffic(self, name: str, percent: int) -> Deployment:
        raise NotImplementedError

    def shadow(self, name: str, ref: ModelRef | None) -> Deployment:
        raise NotImplementedError

    def promote(self, name: str) -> Deployment:
        raise NotImplementedError

    def rollback(self, name: str) -> Deployment:
        raise NotImplementedError

    def delete(self, name: str) -> None:
        raise NotImplementedError

    def list(self) -> builtins.list[Deployment]:
        return []

    def invoke(self, name: str, rows: Sequence[Mapping[str, Any]], protocol: str = "v2") -> builtins.list[float]:
        raise NotImplementedError
