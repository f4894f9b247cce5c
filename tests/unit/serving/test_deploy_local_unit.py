"""LocalTarget state transitions without server processes (start/stop replaced by fakes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hybridml.deploy.local import LocalTarget
from hybridml.errors import ConflictError, InvalidInputError, NotReadyError

pytestmark = pytest.mark.unit


class FakeLocal(LocalTarget):
    """Records starts and stops; every start gets a new fake pid and 'is ready' unless told to fail."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.started: list[dict[str, Any]] = []
        self.stopped: list[int] = []
        self.fail_next = 0

    def _start(self, name: str, config: dict[str, Any], port: int) -> dict[str, Any]:
        if self.fail_next:
            self.fail_next -= 1
            raise NotReadyError("fake start failed")
        state = {"name": name, "pid": 1000 + len(self.started), "port": port, "endpoint": f"http://x:{port}", **config}
        self.started.append(state)
        return state

    def _stop(self, pid: int) -> None:
        self.stopped.append(pid)

    def _alive(self, pid: int) -> bool:
        return pid not in self.stopped


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeLocal:
    monkeypatch.setattr("hybridml.deploy.local.is_ready", lambda *a, **k: True)
    return FakeLocal(tmp_path / "state")


def test_canary_then_rollback_keeps_stable(local: FakeLocal, xgb_bundle: Path) -> None:
    local.deploy("m", 1, xgb_bundle)
    canary = local.deploy("m", 2, xgb_bundle, traffic_percent=25)
    assert (canary.stable_version, canary.canary_version, canary.canary_percent) == ("1", "2", 25)
    assert local.stopped == [1000]  # the old server stops only after the new one is up
    rolled = local.rollback("m")
    assert (rolled.stable_version, rolled.canary_version, rolled.canary_percent) == ("1", None, 0)
    assert local.started[-1]["port"] == local.started[1]["port"]  # restart on the same port
    with pytest.raises(ConflictError):
        local.promote("m")


def test_failed_restart_brings_previous_config_back(local: FakeLocal, xgb_bundle: Path) -> None:
    local.deploy("m", 1, xgb_bundle)
    local.deploy("m", 2, xgb_bundle, traffic_percent=50)
    local.fail_next = 1
    with pytest.raises(NotReadyError):
        local.promote("m")
    after = local.status("m")
    assert (after.stable_version, after.canary_version, after.canary_percent) == ("1", "2", 50)


def test_failed_deploy_keeps_previous_deployment(local: FakeLocal, xgb_bundle: Path) -> None:
    local.deploy("m", 1, xgb_bundle)
    local.fail_next = 1
    with pytest.raises(NotReadyError):
        local.deploy("m", 2, xgb_bundle)
    assert local.status("m").stable_version == "1"
    assert local.stopped == []


@pytest.mark.parametrize(("name", "version"), [("../x", 1), ("", 1), ("m", "../1"), ("m", True), ("-m", 1)])
def test_bad_names_and_versions(local: FakeLocal, xgb_bundle: Path, name: str, version: Any) -> None:
    with pytest.raises(InvalidInputError, match="invalid"):
        local.deploy(name, version, xgb_bundle)


def test_canary_with_other_features_refused(local: FakeLocal, xgb_bundle: Path, hgb_bundle: Path) -> None:
    local.deploy("m", 1, xgb_bundle)
    with pytest.raises(InvalidInputError, match="different features"):
        local.deploy("m", 2, hgb_bundle, traffic_percent=10)


class RoutedFake(FakeLocal):
    """A FakeLocal whose servers are routers: split changes go to the (recorded) admin routes."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.admin: list[tuple[str | None, int | None]] = []

    def _start(self, name: str, config: dict[str, Any], port: int) -> dict[str, Any]:
        return {**super()._start(name, config, port), "router": bool(config.get("canary") or config.get("shadow"))}

    def _admin(self, state: dict[str, Any], *, action: str | None = None, percent: int | None = None) -> None:
        self.admin.append((action, percent))


def test_router_changes_the_split_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, xgb_bundle: Path) -> None:
    monkeypatch.setattr("hybridml.deploy.local.is_ready", lambda *a, **k: True)
    local = RoutedFake(tmp_path / "state")
    local.serve("m", ("1", xgb_bundle), canary=("2", xgb_bundle, 10), shadow=("1", xgb_bundle))
    starts = len(local.started)
    assert local.set_traffic("m", 40).canary_percent == 40
    promoted = local.promote("m")
    assert (promoted.stable_version, promoted.canary_version) == ("2", None)
    assert local.admin == [(None, 40), ("promote", None)]
    assert len(local.started) == starts and local.stopped == []  # no restart
    assert local.state("m")["shadow"]["version"] == "1"
