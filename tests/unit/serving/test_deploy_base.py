"""The DeployTarget contract's shared logic: traffic validation and the wait-until-ready loop."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest

from hybridml.deploy.base import Deployment, DeployTarget, check_traffic_percent
from hybridml.errors import InvalidInputError, NotFoundError, NotReadyError

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class ScriptedTarget(DeployTarget):
    """A target whose status becomes ready after ``ready_after`` polls."""

    def __init__(self, clock: FakeClock, ready_after: int | None) -> None:
        super().__init__(clock=clock, sleep=clock.sleep)
        self.ready_after = ready_after
        self.polls = 0

    def status(self, name: str) -> Deployment:
        if name != "m":
            raise NotFoundError(f"no deployment {name!r}")
        self.polls += 1
        ready = self.ready_after is not None and self.polls > self.ready_after
        detail = "serving 1" if ready else f"starting (poll {self.polls})"
        return Deployment("m", "fake", "http://x", "1", None, 0, ready, detail)

    def deploy(self, name: str, version: str | int, model_dir: Path | str, traffic_percent: int = 100) -> Deployment:
        raise NotImplementedError

    def promote(self, name: str) -> Deployment:
        raise NotImplementedError

    def rollback(self, name: str) -> Deployment:
        raise NotImplementedError

    def delete(self, name: str) -> None:
        raise NotImplementedError

    def list(self) -> builtins.list[Deployment]:
        return []


def test_wait_returns_once_ready() -> None:
    clock = FakeClock()
    target = ScriptedTarget(clock, ready_after=3)
    deployment = target.wait_until_ready("m", timeout_s=10, poll_s=0.5)
    assert deployment.ready
    assert target.polls == 4
    assert clock.sleeps == [0.5, 0.5, 0.5]


def test_wait_gives_up_with_last_status() -> None:
    clock = FakeClock()
    target = ScriptedTarget(clock, ready_after=None)
    with pytest.raises(NotReadyError, match=r"not ready after 2s \(last status: starting \(poll 6\)\)"):
        target.wait_until_ready("m", timeout_s=2, poll_s=0.4)
    assert clock.now == pytest.approx(2.0)
    assert max(clock.sleeps) <= 0.4


def test_wait_for_unknown_name_is_not_found() -> None:
    with pytest.raises(NotFoundError):
        ScriptedTarget(FakeClock(), ready_after=0).wait_until_ready("other", timeout_s=1)


@pytest.mark.parametrize("percent", [0, 101, -5, 50.5, True, "50"])
def test_traffic_percent_rejected(percent: object) -> None:
    with pytest.raises(InvalidInputError, match="traffic percent must be an integer from 1 to 100"):
        check_traffic_percent(percent)  # type: ignore[arg-type]


@pytest.mark.parametrize("percent", [1, 30, 100])
def test_traffic_percent_accepted(percent: int) -> None:
    assert check_traffic_percent(percent) == percent


def test_deployment_is_frozen() -> None:
    deployment = Deployment("m", "local", "http://x", "1", "2", 30, True, "ok")
    with pytest.raises(AttributeError):
        deployment.ready = False  # type: ignore[misc]
