"""The hybrid rollout's state machine over two in-memory targets: every path, refusal and recorded figure."""

from __future__ import annotations

import builtins
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from hybridml.core.schema import FeatureSchema
from hybridml.deploy.contract import Deployment, DeployTarget, ModelRef
from hybridml.deploy.hybrid import HybridRollout, Side, Verdict, compare
from hybridml.errors import ConflictError, InvalidInputError, NotFoundError, NotReadyError

ROWS = [{"x": 1.0}, {"x": 2.0}]
SCHEMA = FeatureSchema.from_dict(
    {"features": [], "target": "y", "classes": ["0", "1"], "n_rows": 2, "data_hash": "sha256:x"}
)


@dataclass
class Served:
    stable: str
    canary: str | None = None
    percent: int = 0


@dataclass
class Log:
    events: list[tuple[str, str, str, str, dict[str, Any], str | None]] = field(default_factory=list)

    def record_event(
        self, name: str, version: int | str, action: str, detail: str, *, reason: str = "", actor: str | None = None
    ) -> None:
        assert len(reason) <= 1000
        self.events.append((name, str(version), action, detail, json.loads(reason), actor))

    @property
    def details(self) -> list[str]:
        return [e[3] for e in self.events]


class MemoryTarget(DeployTarget):
    """Deployments in a dict; scores are ``score[version]`` per row; failures injected by operation name."""

    target_name = "memory"

    def __init__(self, served: dict[str, Served] | None = None, score: Mapping[str, float] | None = None) -> None:
        super().__init__()
        self.served = served or {}
        self.score = dict(score or {"1": 0.1, "2": 0.2})
        self.fail: dict[str, Exception] = {}
        self.calls: builtins.list[tuple[str, Any]] = []

    def _check(self, op: str, arg: Any) -> None:
        self.calls.append((op, arg))
        if op in self.fail:
            raise self.fail.pop(op)

    def deploy(self, ref: ModelRef, traffic_percent: int = 100) -> Deployment:
        self._check("deploy", (ref.version, traffic_percent))
        if traffic_percent == 100:
            self.served[ref.name] = Served(ref.version)
        else:
            self.served[ref.name].canary, self.served[ref.name].percent = ref.version, traffic_percent
        return self.status(ref.name)

    def set_traffic(self, name: str, percent: int) -> Deployment:
        self._check("set_traffic", percent)
        self.served[name].percent = percent
        return self.status(name)

    def shadow(self, name: str, ref: ModelRef | None) -> Deployment:
        raise NotImplementedError

    def status(self, name: str) -> Deployment:
        if name not in self.served:
            raise NotFoundError(f"no deployment {name!r}")
        s = self.served[name]
        return Deployment(name, "memory", "mem://", s.stable, s.canary, s.percent if s.canary else 0, True, "ok")

    def promote(self, name: str) -> Deployment:
        self._check("promote", name)
        s = self.served[name]
        assert s.canary is not None
        self.served[name] = Served(s.canary)
        return self.status(name)

    def rollback(self, name: str) -> Deployment:
        self._check("rollback", name)
        self.served[name] = Served(self.served[name].stable)
        return self.status(name)

    def delete(self, name: str) -> None:
        self._check("delete", name)
        del self.served[name]

    def list(self) -> builtins.list[Deployment]:
        return [self.status(n) for n in sorted(self.served)]

    def invoke(self, name: str, rows: Sequence[Mapping[str, Any]], protocol: str = "v2") -> builtins.list[float]:
        self._check("invoke", len(rows))
        s = self.served[name]
        version = s.canary if s.canary is not None and s.percent == 100 else s.stable
        return [self.score[version]] * len(rows)


def ref(version: str = "2") -> ModelRef:
    return ModelRef("m", version, "file:///nowhere", SCHEMA)


def pair(**b_options: Any) -> tuple[MemoryTarget, MemoryTarget]:
    return MemoryTarget({"m": Served("1")}), MemoryTarget(b_options.pop("served", {"m": Served("1")}), **b_options)


def rollout(a: MemoryTarget, b: MemoryTarget, log: Log, **options: Any) -> HybridRollout:
    return HybridRollout([Side("a", a), Side("b", b)], log, ready_timeout_s=1, actor="t", **options)


V1 = {"stable": "1", "canary": None, "percent": 0, "ready": True}
V2 = {"stable": "2", "canary": None, "percent": 0, "ready": True}


def test_promoted_on_both_with_the_parity_window_and_figures() -> None:
    a, b, log = *pair(), Log()
    outcome = rollout(a, b, log, canary_percent=5).run(ref(), ROWS)
    assert (outcome.state, outcome.states) == ("promoted", ["pending", "canary", "promoted"])
    for target in (a, b):
        assert target.calls == [
            ("deploy", ("2", 5)),
            ("set_traffic", 100),  # the parity window: the new version answers everything, stable kept
            ("invoke", 2),
            ("promote", "m"),
        ]
    assert log.details == [
        "hybrid a+b: start -> pending",
        "hybrid a+b: pending -> canary",
        "hybrid a+b: canary -> promoted",
    ]
    assert {(e[0], e[1], e[2], e[5]) for e in log.events} == {("m", "2", "deployment", "t")}
    assert log.events[0][4] == {"version": "2", "canary_percent": 5, "previous": {"a": V1, "b": V1}}
    on_canary = {"stable": "1", "canary": "2", "percent": 5, "ready": True}
    assert log.events[1][4] == {"sides": {"a": on_canary, "b": on_canary}}
    parity = {"rows": 2, "max_abs_diff": 0.0, "mean_abs_diff": 0.0, "tolerance": 1e-6, "ok": True}
    assert log.events[2][4] == {"sides": {"a": V2, "b": V2}, "parity": parity}


@pytest.mark.parametrize(("b_score", "state"), [(0.2 + 0.01, "promoted"), (0.2 + 0.0101, "rolled_back")])
def test_parity_tolerance_is_inclusive(b_score: float, state: str) -> None:
    a, b, log = *pair(score={"1": 0.1, "2": b_score}), Log()
    outcome = rollout(a, b, log, tolerance=0.0100001).run(ref(), ROWS)
    assert outcome.state == state
    assert outcome.parity is not None and outcome.parity.max_abs_diff == pytest.approx(b_score - 0.2)


def test_analysis_saying_rollback_rolls_both_back_before_parity() -> None:
    a, b, log = *pair(), Log()
    seen: list[set[str]] = []

    def analysis(canaries: Mapping[str, Deployment]) -> Verdict:
        seen.append(set(canaries))
        return Verdict(False, "canary AUC 0.61 < stable 0.74", {"auc_canary": 0.61, "auc_stable": 0.74})

    outcome = rollout(a, b, log, analysis=analysis).run(ref(), ROWS)
    assert seen == [{"a", "b"}]
    assert (outcome.state, outcome.reason, outcome.parity) == (
        "rolled_back",
        "analysis: canary AUC 0.61 < stable 0.74",
        None,
    )
    assert [c[0] for c in a.calls] == [c[0] for c in b.calls] == ["deploy", "rollback"]
    assert log.events[-1][3] == "hybrid a+b: canary -> rolled_back"
    assert log.events[-1][4] == {
        "why": "analysis: canary AUC 0.61 < stable 0.74",
        "sides": {"a": V1, "b": V1},
        "analysis": {"auc_canary": 0.61, "auc_stable": 0.74},
    }


def test_a_side_failing_to_deploy_rolls_the_other_back_and_says_why() -> None:
    a, b, log = *pair(), Log()
    b.fail["deploy"] = NotReadyError("endpoint m failed: " + "x" * 2000)
    outcome = rollout(a, b, log).run(ref(), ROWS)
    assert (outcome.state, outcome.states) == ("rolled_back", ["pending", "rolled_back"])
    assert outcome.reason == "b: deploy failed: endpoint m failed: " + "x" * 2000
    assert a.calls == [("deploy", ("2", 10)), ("rollback", "m")]
    assert b.calls == [("deploy", ("2", 10))]  # its failed deploy left v1 serving: nothing to undo
    why = log.events[-1][4]["why"]
    assert why == outcome.reason[:300]
    assert (a.served, b.served) == ({"m": Served("1")}, {"m": Served("1")})


def test_a_side_failing_to_promote_redeploys_the_promoted_side_on_its_previous_version() -> None:
    a, b, log = *pair(), Log()
    b.fail["promote"] = NotReadyError("update timed out")
    resolved: list[str] = []

    def resolve(version: str) -> ModelRef:
        resolved.append(version)
        return ref(version)

    outcome = rollout(a, b, log, resolve=resolve).run(ref(), ROWS)
    assert (outcome.state, outcome.reason) == ("rolled_back", "b: promote failed: update timed out")
    assert resolved == ["1"]
    assert a.calls[-2:] == [("promote", "m"), ("deploy", ("1", 100))]
    assert b.calls[-1] == ("rollback", "m")
    assert outcome.restore_errors == {}
    assert (a.served, b.served) == ({"m": Served("1")}, {"m": Served("1")})
    assert log.events[-1][4]["parity"]["ok"] is True


def test_without_resolve_a_promoted_side_is_reported_not_restored() -> None:
    a, b, log = *pair(), Log()
    b.fail["promote"] = NotReadyError("update timed out")
    outcome = rollout(a, b, log).run(ref(), ROWS)
    assert outcome.state == "rolled_back"
    assert outcome.restore_errors == {"a": "a already serves '2'; no way to redeploy '1' was given"}
    assert log.events[-1][4]["restore_errors"] == outcome.restore_errors
    assert log.events[-1][4]["sides"] == {"a": V2, "b": V1}


def test_a_side_serving_nothing_gets_the_version_at_100_and_loses_it_on_rollback() -> None:
    a, b, log = *pair(served={}), Log()
    b.fail["invoke"] = NotReadyError("endpoint m is Updating, not InService")
    outcome = rollout(a, b, log).run(ref(), ROWS)
    assert outcome.reason == "parity: b did not answer: endpoint m is Updating, not InService"
    assert b.calls == [("deploy", ("2", 100)), ("invoke", 2), ("delete", "m")]  # no canary, no traffic window
    assert log.events[0][4]["previous"] == {"a": V1, "b": None}
    assert log.events[-1][4]["sides"] == {"a": V1, "b": None}
    assert outcome.sides == {"a": a.status("m"), "b": None}


def test_a_side_with_a_canary_in_trial_is_refused_before_anything_moves() -> None:
    a, b, log = *pair(served={"m": Served("1", "3", 20)}), Log()
    with pytest.raises(ConflictError, match=r"^b deployment 'm' has canary '3' in trial: promote or roll it back"):
        rollout(a, b, log).run(ref(), ROWS)
    assert (a.calls, b.calls, log.events) == ([], [], [])


def test_no_rows_is_refused_before_anything_moves() -> None:
    a, b, log = *pair(), Log()
    with pytest.raises(InvalidInputError, match="invoke needs a non-empty list of rows"):
        rollout(a, b, log).run(ref(), [])
    assert (a.calls, b.calls, log.events) == ([], [], [])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"canary_percent": 100}, "hybrid canary percent must be 1-99"),
        ({"canary_percent": 0}, "traffic percent must be an integer from 1 to 100, got 0"),
        ({"ready_timeout_s": -1}, "ready timeout must be zero or more seconds, got -1"),
        ({"tolerance": -0.1}, "parity tolerance must be a number of zero or more, got -0.1"),
        ({"tolerance": math.nan}, "parity tolerance must be a number of zero or more, got nan"),
        ({"tolerance": True}, "parity tolerance must be a number of zero or more, got True"),
    ],
)
def test_bad_settings_are_refused(options: dict[str, Any], message: str) -> None:
    a, b = pair()
    with pytest.raises(InvalidInputError) as caught:
        HybridRollout([Side("a", a), Side("b", b)], Log(), **options)
    assert caught.value.message.startswith(message)


@pytest.mark.parametrize("labels", [["a"], ["a", "a"], ["a", "b", "c"]])
def test_two_sides_with_different_labels(labels: list[str]) -> None:
    with pytest.raises(InvalidInputError, match=r"^a hybrid rollout needs two sides with different labels$"):
        HybridRollout([Side(label, MemoryTarget()) for label in labels], Log())


def test_compare_counts_rows_and_refuses_what_cannot_be_compared() -> None:
    parity = compare({"a": [0.1, 0.5, 0.9], "b": [0.1, 0.4, 0.95]}, 0.1)
    assert (parity.rows, parity.ok, parity.tolerance) == (3, True, 0.1)
    assert parity.max_abs_diff == pytest.approx(0.1)
    assert parity.mean_abs_diff == pytest.approx(0.05)
    nan = compare({"a": [0.1, math.nan], "b": [0.1, 0.2]}, 1.0)
    assert not nan.ok and math.isnan(nan.max_abs_diff)
    for scores in ({"a": [0.1], "b": [0.1, 0.2]}, {"a": [], "b": []}):
        with pytest.raises(InvalidInputError, match="parity needs as many scores from each side"):
            compare(scores, 0.1)
    with pytest.raises(InvalidInputError, match="parity compares two sides, got 1"):
        compare({"a": [0.1]}, 0.1)


def test_an_event_reason_stays_json_within_the_registry_limit_whatever_the_figures() -> None:
    a, b, log = *pair(), Log()
    figures = {f"figure_{i}": "y" * 50 for i in range(40)}  # ~2,500 characters of analysis figures
    outcome = rollout(a, b, log, analysis=lambda _: Verdict(False, "z" * 500, figures)).run(ref(), ROWS)
    assert outcome.state == "rolled_back"
    last = log.events[-1][4]  # Log parses every reason as JSON and checks its length
    assert last == {"why": "analysis: " + "z" * 290}  # the sides, then the analysis figures left out
