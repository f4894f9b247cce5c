"""LocalTarget state transitions without server processes (start/stop and the router replaced by fakes)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from hybridml.core.naming import RULE
from hybridml.deploy import LocalConfig, ModelRef, model_ref
from hybridml.deploy.local import LocalTarget
from hybridml.errors import ConflictError, InvalidInputError, NotFoundError, NotReadyError

pytestmark = pytest.mark.unit


def ref(name: str, version: Any, bundle: Path) -> ModelRef:
    return model_ref(name, version, bundle.as_uri())


class FakeLocal(LocalTarget):
    """Records starts and stops; every start gets a new fake pid and 'is ready' unless told to fail."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(LocalConfig(state_dir))
        self.started: list[dict[str, Any]] = []
        self.stopped: list[int] = []
        self.fail_next = 0

    def _start(self, name: str, config: dict[str, Any], port: int) -> dict[str, Any]:
        if self.fail_next:
            self.fail_next -= 1
            raise NotReadyError("fake start failed")
        pid = 1000 + len(self.started)
        state = {"name": name, "pid": pid, "port": port, "endpoint": f"http://x:{port}", "control": f"fake:{pid}"}
        state = {**state, **config}
        self.started.append(state)
        return state

    def _stop(self, pid: int) -> None:
        self.stopped.append(pid)

    def _alive(self, pid: int) -> bool:
        return pid not in self.stopped


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeLocal:
    monkeypatch.setattr("hybridml.deploy.local.target.is_ready", lambda *a, **k: True)
    return FakeLocal(tmp_path / "state")


def test_canary_then_rollback_keeps_stable(local: FakeLocal, xgb_bundle: Path) -> None:
    local.deploy(ref("m", 1, xgb_bundle))
    canary = local.deploy(ref("m", 2, xgb_bundle), traffic_percent=25)
    assert (canary.stable_version, canary.canary_version, canary.canary_percent) == ("1", "2", 25)
    assert local.stopped == [1000]  # the old server stops only after the new one is up
    rolled = local.rollback("m")
    assert (rolled.stable_version, rolled.canary_version, rolled.canary_percent) == ("1", None, 0)
    assert local.started[-1]["port"] == local.started[1]["port"]  # restart on the same port
    with pytest.raises(ConflictError):
        local.promote("m")


def test_failed_restart_brings_previous_config_back(local: FakeLocal, xgb_bundle: Path) -> None:
    local.deploy(ref("m", 1, xgb_bundle))
    local.deploy(ref("m", 2, xgb_bundle), traffic_percent=50)
    local.fail_next = 1
    with pytest.raises(NotReadyError):
        local.promote("m")
    after = local.status("m")
    assert (after.stable_version, after.canary_version, after.canary_percent) == ("1", "2", 50)


def test_failed_deploy_keeps_previous_deployment(local: FakeLocal, xgb_bundle: Path) -> None:
    local.deploy(ref("m", 1, xgb_bundle))
    local.fail_next = 1
    with pytest.raises(NotReadyError):
        local.deploy(ref("m", 2, xgb_bundle))
    assert local.status("m").stable_version == "1"
    assert local.stopped == []


@pytest.mark.parametrize(("name", "version"), [("../x", 1), ("", 1), ("m", "../1"), ("m", True), ("-m", 1)])
def test_bad_names_and_versions(local: FakeLocal, xgb_bundle: Path, name: str, version: Any) -> None:
    with pytest.raises(InvalidInputError, match="invalid"):
        local.deploy(ref(name, version, xgb_bundle))
    assert local.started == []


@pytest.mark.parametrize("name", ["My Model", "model_1", "m.v2", "a" * 41, "x-"])
def test_names_follow_the_one_naming_rule(local: FakeLocal, xgb_bundle: Path, name: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(f"invalid model name {name!r}: use {RULE}")):
        local.deploy(ref(name, 1, xgb_bundle))
    with pytest.raises(InvalidInputError, match="invalid model name"):
        local.status(name)
    assert local.started == [] and not (local.state_dir / name).exists()


def test_a_deployment_named_before_the_rule_can_still_be_read_and_deleted(local: FakeLocal, xgb_bundle: Path) -> None:
    local.deploy(ref("m", 1, xgb_bundle))
    legacy = {**json.loads((local.state_dir / "m.json").read_text()), "name": "Old_Model"}
    (local.state_dir / "Old_Model.json").write_text(json.dumps(legacy))
    assert [d.name for d in local.list()] == ["Old_Model", "m"]
    local.delete("Old_Model")
    assert not (local.state_dir / "Old_Model.json").exists()
    with pytest.raises(InvalidInputError, match="invalid model name 'Old_Model'"):
        local.deploy(ref("Old_Model", 2, xgb_bundle))  # but nothing new is made under such a name


def test_canary_with_other_features_refused(local: FakeLocal, xgb_bundle: Path, hgb_bundle: Path) -> None:
    local.deploy(ref("m", 1, xgb_bundle))
    with pytest.raises(InvalidInputError, match="canary '2' has different features than stable '1'; deploy it at 100%"):
        local.deploy(ref("m", 2, hgb_bundle), traffic_percent=10)
    with pytest.raises(InvalidInputError, match=r"shadow 's' has different features than stable '1'$"):
        local.shadow("m", ref("m", "s", hgb_bundle))
    assert len(local.started) == 1


def test_a_version_label_means_one_bundle(local: FakeLocal, xgb_bundle: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(xgb_bundle, copy)
    local.deploy(ref("m", 1, xgb_bundle))
    with pytest.raises(InvalidInputError, match="two different bundles have version '1'"):
        local.deploy(ref("m", 1, copy), traffic_percent=10)
    with pytest.raises(InvalidInputError, match="two different bundles have version '1'"):
        local.shadow("m", ref("m", 1, copy))
    assert local.shadow("m", ref("m", 1, xgb_bundle)).shadow_version == "1"  # the same bundle is fine


def test_a_reference_whose_schema_is_not_the_bundles_is_refused(
    local: FakeLocal, xgb_bundle: Path, hgb_bundle: Path
) -> None:
    lying = ModelRef("m", "1", xgb_bundle.as_uri(), ref("m", 1, hgb_bundle).schema)
    with pytest.raises(InvalidInputError, match="does not have the schema its reference 'm' version '1' names"):
        local.deploy(lying)
    assert local.started == [] and not (local.state_dir / "m").exists()


def test_missing_artifact_is_not_found(local: FakeLocal, xgb_bundle: Path, tmp_path: Path) -> None:
    gone = ModelRef("m", "1", (tmp_path / "gone").as_uri(), ref("m", 1, xgb_bundle).schema)
    with pytest.raises(NotFoundError, match="nothing at file://"):
        local.deploy(gone)


def test_bundles_are_copied_into_the_state_directory(local: FakeLocal, xgb_bundle: Path) -> None:
    local.deploy(ref("m", 1, xgb_bundle))
    stable = local.state("m")["stable"]
    assert stable == {
        "version": "1",
        "model_dir": str((local.state_dir / "m" / "1").resolve()),
        "artifact_uri": xgb_bundle.as_uri(),
    }
    assert (local.state_dir / "m" / "1" / "hybridml.json").read_bytes() == (xgb_bundle / "hybridml.json").read_bytes()
    assert [p.name for p in (local.state_dir / "m").iterdir()] == ["1"]  # no scratch left behind


class FakeRouter:
    """The router's control listener as the target sees it: live split and variants, changed by calls."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.variants = {
            role: {"version": config[role]["version"], "pid": 1, "alive": True}
            for role in ("stable", "canary", "shadow")
            if config.get(role)
        }
        self.percent = config["canary"]["percent"] if config.get("canary") else 0
        self.calls: list[tuple[str | None, int | None]] = []
        self.down = False

    def state(self) -> dict[str, Any]:
        if self.down:
            raise NotReadyError("cannot reach control listener at fake: refused")
        return {"model": "m", "canary_percent": self.percent, "variants": self.variants}

    def traffic(self, percent: int) -> dict[str, Any]:
        self.calls.append((None, percent))
        self.percent = percent
        return self.state()

    def promote(self) -> dict[str, Any]:
        self.calls.append(("promote", None))
        self.variants["stable"] = self.variants.pop("canary")
        self.percent = 0
        return self.state()

    def rollback(self) -> dict[str, Any]:
        self.calls.append(("rollback", None))
        self.variants.pop("canary")
        self.percent = 0
        return self.state()


class RoutedFake(FakeLocal):
    """A FakeLocal whose servers are routers: split changes go to the (fake) control listener."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.routers: dict[str, FakeRouter] = {}

    def _start(self, name: str, config: dict[str, Any], port: int) -> dict[str, Any]:
        state = super()._start(name, config, port)
        self.routers[state["control"]] = FakeRouter(config)
        return {**state, "router": bool(config.get("canary") or config.get("shadow"))}

    def _control(self, state: dict[str, Any]) -> Any:
        return self.routers[state["control"]]


@pytest.fixture
def routed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RoutedFake:
    monkeypatch.setattr("hybridml.deploy.local.target.is_ready", lambda *a, **k: True)
    return RoutedFake(tmp_path / "state")


def test_router_changes_the_split_in_place(routed: RoutedFake, xgb_bundle: Path) -> None:
    routed.serve("m", ref("m", 1, xgb_bundle), canary=(ref("m", 2, xgb_bundle), 10), shadow=ref("m", 1, xgb_bundle))
    starts = len(routed.started)
    assert routed.set_traffic("m", 40).canary_percent == 40
    promoted = routed.promote("m")
    assert (promoted.stable_version, promoted.canary_version, promoted.shadow_version) == ("2", None, "1")
    router = routed.routers[routed.state("m")["control"]]
    assert router.calls == [(None, 40), ("promote", None)]
    assert len(routed.started) == starts and routed.stopped == []  # no restart
    assert routed.state("m")["shadow"]["version"] == "1"


def test_status_reads_the_live_split_after_a_canary_crash(routed: RoutedFake, xgb_bundle: Path) -> None:
    routed.deploy(ref("m", 1, xgb_bundle))
    routed.deploy(ref("m", 2, xgb_bundle), traffic_percent=30)
    router = routed.routers[routed.state("m")["control"]]
    router.variants["canary"]["alive"] = False  # what the router reports once the canary worker died
    router.percent = 0
    status = routed.status("m")
    assert (status.stable_version, status.canary_version, status.canary_percent, status.ready) == ("1", "2", 0, True)
    assert status.detail.endswith("(canary 2 is down, stable answers all requests)")
    assert routed.state("m")["canary"]["percent"] == 30  # status reports, it does not rewrite the record


def test_status_falls_back_to_the_record_when_control_does_not_answer(routed: RoutedFake, xgb_bundle: Path) -> None:
    routed.deploy(ref("m", 1, xgb_bundle))
    routed.deploy(ref("m", 2, xgb_bundle), traffic_percent=30)
    routed.routers[routed.state("m")["control"]].down = True
    status = routed.status("m")
    assert (status.canary_version, status.canary_percent, status.ready) == ("2", 30, True)
    assert "(recorded split shown: cannot reach control listener at fake: refused)" in status.detail


def test_shadow_on_and_off_start_a_new_server_first(routed: RoutedFake, xgb_bundle: Path) -> None:
    routed.deploy(ref("m", 1, xgb_bundle))
    with pytest.raises(ConflictError, match="deployment 'm' has no shadow to remove"):
        routed.shadow("m", None)
    on = routed.shadow("m", ref("other", 7, xgb_bundle))
    assert (on.stable_version, on.shadow_version) == ("1", "other-7")  # another model's version keeps its name
    assert "shadowed by other-7" in on.detail
    assert routed.stopped == [1000]
    off = routed.shadow("m", None)
    assert (off.stable_version, off.shadow_version, routed.state("m")["router"]) == ("1", None, False)
    assert routed.stopped == [1000, 1001]


def test_a_router_without_a_control_address_is_restarted(local: FakeLocal, xgb_bundle: Path) -> None:
    # A server started by an older hybridml: router, but its admin routes are gone from the inference port.
    local.deploy(ref("m", 1, xgb_bundle))
    local.deploy(ref("m", 2, xgb_bundle), traffic_percent=30)
    state = local.state("m")
    local._files.write({**state, "router": True, "control": None})
    moved = local.set_traffic("m", 60)
    assert moved.canary_percent == 60
    assert local.stopped[-1] == state["pid"] and local.started[-1]["port"] == state["port"]


def test_list_skips_stray_files_but_not_corrupt_state(local: FakeLocal, xgb_bundle: Path) -> None:
    local.deploy(ref("m", 1, xgb_bundle))
    (local.state_dir / "my notes.json").write_text("{}")
    assert [d.name for d in local.list()] == ["m"]
    (local.state_dir / "n.json").write_text("{half")
    with pytest.raises(InvalidInputError, match=r"deployment state .*n\.json is corrupt"):
        local.list()


def test_state_is_written_atomically_as_sorted_json(local: FakeLocal, xgb_bundle: Path) -> None:
    local.deploy(ref("m", 1, xgb_bundle))
    text = (local.state_dir / "m.json").read_text()
    state = json.loads(text)
    assert text == json.dumps(state, indent=2, sort_keys=True)
    assert {"name", "pid", "port", "endpoint", "control", "stable", "canary", "shadow", "host"} <= set(state)
    assert not list(local.state_dir.glob("*.tmp"))  # the temporary file was renamed into place


@pytest.mark.parametrize("version", ["1\n", "v2\n", "1/..", "", "-1"])
def test_a_version_that_would_be_an_odd_file_name_is_refused(version: str) -> None:
    from hybridml.deploy.local.state import check_version

    with pytest.raises(InvalidInputError, match="invalid version"):
        check_version(version)
