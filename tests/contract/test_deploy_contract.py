"""The deploy contract suite: what every target (local, sagemaker on moto; KServe next) must do the same way."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from hybridml.core.naming import RULE
from hybridml.deploy import DeployTarget
from hybridml.errors import ConflictError, InvalidInputError, NotFoundError, NotReadyError
from hybridml.serving.predictor import BundlePredictor
from tests.contract.harness import Bundles, FakeClock, Harness


def expected(bundle: Path, bundles: Bundles) -> list[float]:
    """The scores the bundle itself gives the contract rows (what any target serving it must return)."""
    return [float(s) for s in BundlePredictor.load(bundle).predict(bundles.rows)]


def test_deploy_at_100_serves_one_score_per_row(harness: Harness, bundles: Bundles) -> None:
    target = harness.target
    deployed = target.deploy(harness.ref("c-stable", "1", bundles.v1))
    assert (
        deployed.name,
        deployed.target,
        deployed.stable_version,
        deployed.canary_version,
        deployed.canary_percent,
        deployed.shadow_version,
        deployed.ready,
    ) == ("c-stable", target.target_name, "1", None, 0, None, True)
    assert re.match(r"^https?://", deployed.endpoint)
    assert target.status("c-stable") == deployed
    assert target.wait_until_ready("c-stable", timeout_s=30) == deployed
    assert [d.name for d in target.list()] == ["c-stable"]
    with pytest.raises(InvalidInputError, match="non-empty list of rows"):
        target.invoke("c-stable", [])
    harness.needs("scores")
    scores = target.invoke("c-stable", bundles.rows)
    assert len(scores) == len(bundles.rows) and all(isinstance(s, float) for s in scores)
    assert scores == pytest.approx(expected(bundles.v1, bundles), abs=1e-6)
    assert target.invoke("c-stable", bundles.rows[:1], protocol="v1") == pytest.approx(scores[:1], abs=1e-6)


def test_canary_traffic_and_promote(harness: Harness, bundles: Bundles) -> None:
    target, name = harness.target, "c-canary"
    v1, v2 = expected(bundles.v1, bundles), expected(bundles.v2, bundles)
    target.deploy(harness.ref(name, "1", bundles.v1))
    canary = target.deploy(harness.ref(name, "2", bundles.v2), traffic_percent=30)
    assert (canary.stable_version, canary.canary_version, canary.canary_percent, canary.ready) == ("1", "2", 30, True)
    assert target.status(name).canary_percent == 30

    everything = target.set_traffic(name, 100)
    assert (everything.stable_version, everything.canary_version, everything.canary_percent) == ("1", "2", 100)
    harness.needs("scores")
    assert target.invoke(name, bundles.rows) == pytest.approx(v2, abs=1e-6)
    nothing = target.set_traffic(name, 0)
    assert (nothing.canary_version, nothing.canary_percent) == ("2", 0)
    assert target.invoke(name, bundles.rows) == pytest.approx(v1, abs=1e-6)
    with pytest.raises(InvalidInputError, match="traffic percent must be an integer from 0 to 100"):
        target.set_traffic(name, 101)

    promoted = target.promote(name)
    assert (promoted.stable_version, promoted.canary_version, promoted.canary_percent, promoted.ready) == (
        "2",
        None,
        0,
        True,
    )
    assert target.status(name).stable_version == "2"
    assert target.invoke(name, bundles.rows) == pytest.approx(v2, abs=1e-6)
    with pytest.raises(ConflictError, match="no canary"):
        target.promote(name)
    with pytest.raises(ConflictError, match="no canary"):
        target.rollback(name)


def test_rollback_keeps_the_stable_version(harness: Harness, bundles: Bundles) -> None:
    target, name = harness.target, "c-rollback"
    target.deploy(harness.ref(name, "1", bundles.v1))
    target.deploy(harness.ref(name, "2", bundles.v2), traffic_percent=50)
    rolled = target.rollback(name)
    assert (rolled.stable_version, rolled.canary_version, rolled.canary_percent, rolled.ready) == ("1", None, 0, True)
    harness.needs("scores")
    v1 = expected(bundles.v1, bundles)
    for _ in range(5):  # no request reaches the dropped canary any more
        assert target.invoke(name, bundles.rows) == pytest.approx(v1, abs=1e-6)
    with pytest.raises(ConflictError, match="no canary"):
        target.rollback(name)
    with pytest.raises(ConflictError, match="no canary"):
        target.set_traffic(name, 10)


def test_shadow_on_and_off(harness: Harness, bundles: Bundles) -> None:
    target, name = harness.target, "c-shadow"
    harness.needs("shadow")
    v1 = expected(bundles.v1, bundles)
    target.deploy(harness.ref(name, "1", bundles.v1))
    shadowed = target.shadow(name, harness.ref(name, "2", bundles.v2))
    assert (shadowed.stable_version, shadowed.canary_version, shadowed.shadow_version, shadowed.ready) == (
        "1",
        None,
        "2",
        True,
    )
    assert target.invoke(name, bundles.rows) == pytest.approx(v1, abs=1e-6)  # a shadow's answers are never returned
    with pytest.raises(InvalidInputError, match="different features"):
        target.shadow(name, harness.ref(name, "9", bundles.other_features))

    # A canary joins stable and shadow; a deploy at 100 replaces all three.
    harness.needs("canary beside a shadow")
    joined = target.deploy(harness.ref(name, "3", bundles.v2), traffic_percent=20)
    assert (joined.stable_version, joined.canary_version, joined.canary_percent, joined.shadow_version) == (
        "1",
        "3",
        20,
        "2",
    )
    replaced = target.deploy(harness.ref(name, "4", bundles.v1))
    assert (replaced.stable_version, replaced.canary_version, replaced.shadow_version) == ("4", None, None)
    with pytest.raises(ConflictError, match="no shadow"):
        target.shadow(name, None)

    target.shadow(name, harness.ref(name, "2", bundles.v2))
    off = target.shadow(name, None)
    assert (off.stable_version, off.shadow_version, off.ready) == ("4", None, True)
    assert target.status(name).shadow_version is None


def test_refused_deploys_leave_the_deployment_serving(harness: Harness, bundles: Bundles) -> None:
    target, name = harness.target, "c-refusals"
    before = target.deploy(harness.ref(name, "1", bundles.v1))
    harness.needs("refusing a model that does not load before deploying")
    with pytest.raises(InvalidInputError):
        target.deploy(harness.ref(name, "2", bundles.broken))  # a model that does not load
    with pytest.raises(InvalidInputError):
        target.deploy(harness.ref(name, "2", bundles.broken), traffic_percent=10)
    with pytest.raises(InvalidInputError, match="different features"):
        target.deploy(harness.ref(name, "3", bundles.other_features), traffic_percent=10)
    for percent in (0, 101, -1):
        with pytest.raises(InvalidInputError, match="traffic percent must be an integer from 1 to 100"):
            target.deploy(harness.ref(name, "2", bundles.v2), traffic_percent=percent)
    with pytest.raises(InvalidInputError, match="has no stable version"):
        target.deploy(harness.ref("c-nothing-yet", "1", bundles.v1), traffic_percent=10)
    assert target.status(name) == before
    assert [d.name for d in target.list()] == [name]
    harness.needs("scores")
    assert target.invoke(name, bundles.rows) == pytest.approx(expected(bundles.v1, bundles), abs=1e-6)


@pytest.mark.parametrize("bad", ["My Model", "model_1", "m.v2", "-m", "a" * 41])
def test_names_follow_the_naming_rule(harness: Harness, bundles: Bundles, bad: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(f"invalid model name {bad!r}: use {RULE}")):
        harness.target.deploy(harness.ref(bad, "1", bundles.v1))
    assert harness.target.list() == []


def test_an_invalid_name_is_refused_before_any_lookup(harness: Harness) -> None:
    with pytest.raises(InvalidInputError, match=re.escape("invalid model name '../x'")):
        harness.target.status("../x")


UNKNOWN: dict[str, Callable[[DeployTarget, Bundles], object]] = {
    "status": lambda t, b: t.status("ghost"),
    "wait_until_ready": lambda t, b: t.wait_until_ready("ghost", timeout_s=1),
    "set_traffic": lambda t, b: t.set_traffic("ghost", 10),
    "shadow": lambda t, b: t.shadow("ghost", None),
    "promote": lambda t, b: t.promote("ghost"),
    "rollback": lambda t, b: t.rollback("ghost"),
    "delete": lambda t, b: t.delete("ghost"),
    "invoke": lambda t, b: t.invoke("ghost", b.rows),
}


@pytest.mark.parametrize("operation", list(UNKNOWN))
def test_every_operation_on_an_unknown_name_is_not_found(harness: Harness, bundles: Bundles, operation: str) -> None:
    with pytest.raises(NotFoundError, match="'ghost'"):
        UNKNOWN[operation](harness.target, bundles)


def test_delete_then_not_found(harness: Harness, bundles: Bundles) -> None:
    target, name = harness.target, "c-delete"
    target.deploy(harness.ref(name, "1", bundles.v1))
    target.delete(name)
    with pytest.raises(NotFoundError):
        target.status(name)
    with pytest.raises(NotFoundError):
        target.invoke(name, bundles.rows)
    with pytest.raises(NotFoundError):
        target.delete(name)
    assert target.list() == []
    again = target.deploy(harness.ref(name, "2", bundles.v2))  # the name is free again
    assert (again.stable_version, again.ready) == ("2", True)


def test_wait_until_ready_keeps_its_budget(harness: Harness, bundles: Bundles) -> None:
    name = "c-wait"
    harness.target.deploy(harness.ref(name, "1", bundles.v1))
    clock = FakeClock()
    timed = harness.with_clock(clock, clock.sleep)
    assert timed.wait_until_ready(name, timeout_s=5).ready
    assert clock.sleeps == []  # ready at the first poll: no pause at all
    harness.break_serving(name)
    with pytest.raises(NotReadyError, match=r"^deployment 'c-wait' not ready after 1\.3s \(last status: "):
        timed.wait_until_ready(name, timeout_s=1.3)
    # Backoff from 0.05 s, and the last pause cut so the budget is spent exactly, not overrun.
    assert clock.sleeps == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.55])
    assert clock.now == pytest.approx(1.3)
    assert not harness.target.status(name).ready
