"""One approved version rolled out to two deploy targets under one recorded state machine (the hybrid rollout).

::

    pending ──► canary (on both) ──► promoted (on both)
       │             │
       └─────────────┴──────────► rolled_back (on both)

* **pending**: the previous state of each side is read; a side with a canary already in trial is refused.
* **canary**: the version is deployed on each side in turn, as a canary at ``canary_percent`` beside the stable
  version (at 100 % on a side that serves nothing yet), and waited on until ready. If either side fails to
  deploy or to become ready, both go back to what they served before.
* An optional **analysis** callback looks at both deployments and says promote or roll back (with figures).
* **parity**: the same rows are sent to both sides with the canary answering all of each side's requests (the
  stable version stays deployed, so a rollback is immediate), and the scores are compared row by row; a
  difference above ``tolerance`` (or a side that does not answer) rolls both back.
* **promoted**: the canary becomes the stable version on both sides. A side that fails to promote rolls both
  back: a side already promoted is redeployed on its previous version through ``resolve``.

Every transition is one ``deployment`` event in the version's history (``hybrid local+sagemaker: pending ->
canary``) with the figures as compact JSON in its reason: each side's versions and split, the parity figures,
the analysis figures, and why a rollout was rolled back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from hybridml.deploy.contract import Deployment, DeployTarget, ModelRef, check_rows, check_traffic_percent
from hybridml.errors import ConflictError, HybridmlError, InvalidInputError, NotFoundError

PENDING, CANARY, PROMOTED, ROLLED_BACK = "pending", "canary", "promoted", "rolled_back"
# The state machine: every transition the rollout may record, and nothing else.
TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING: frozenset({CANARY, ROLLED_BACK}),
    CANARY: frozenset({PROMOTED, ROLLED_BACK}),
    PROMOTED: frozenset(),
    ROLLED_BACK: frozenset(),
}
_REASON_MAX = 1000  # what the registry keeps of an event's reason
_WHY_MAX = 300


class EventLog(Protocol):
    """What the rollout needs of the registry: :meth:`hybridml.registry.ModelRegistry.record_event`."""

    def record_event(
        self, name: str, version: int | str, action: str, detail: str, *, reason: str = "", actor: str | None = None
    ) -> Any: ...


@dataclass(frozen=True)
class Side:
    """One deploy target of the rollout.

    Attributes:
        label: how the side is named in events and results (``local``, ``kserve``, ``sagemaker``...).
        target: the deploy target.
        name: the deployment's name on that target (None: the model's name).
    """

    label: str
    target: DeployTarget
    name: str | None = None

    def deployment_name(self, ref: ModelRef) -> str:
        """The name the deployment of ``ref`` has on this side."""
        return self.name or ref.name


@dataclass(frozen=True)
class Verdict:
    """What an analysis callback decides from both canaries.

    Attributes:
        promote: True to go on (parity, then promotion), False to roll both back.
        reason: one line for the history.
        figures: numbers behind the decision (recorded as JSON).
    """

    promote: bool
    reason: str
    figures: Mapping[str, Any] = field(default_factory=dict)


Analysis = Callable[[Mapping[str, Deployment]], Verdict]


@dataclass(frozen=True)
class Parity:
    """The parity check: the same rows scored by both sides.

    Attributes:
        rows: number of rows sent to each side.
        max_abs_diff: largest absolute difference of two scores of one row.
        mean_abs_diff: mean absolute difference.
        tolerance: largest difference allowed.
        ok: ``max_abs_diff <= tolerance``.
    """

    rows: int
    max_abs_diff: float
    mean_abs_diff: float
    tolerance: float
    ok: bool


@dataclass(frozen=True)
class Outcome:
    """Where a hybrid rollout ended.

    Attributes:
        state: ``promoted`` or ``rolled_back``.
        reason: why it ended there (for a rollback: the side and its error, the analysis or the parity figures).
        sides: each side's deployment at the end (None: the side serves nothing, as before the rollout).
        parity: the parity check, or None where the rollout ended before it.
        states: the states recorded, in order.
        restore_errors: sides that could not be put back on their previous version, with the error.
    """

    state: str
    reason: str
    sides: dict[str, Deployment | None]
    parity: Parity | None
    states: list[str]
    restore_errors: dict[str, str] = field(default_factory=dict)


def compare(scores: Mapping[str, Sequence[float]], tolerance: float) -> Parity:
    """The parity of two sides' scores of the same rows (row by row, absolute difference).

    Raises:
        InvalidInputError: not exactly two sides, lists of other lengths, empty lists, or a bad tolerance.
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < math.inf:
        raise InvalidInputError(f"parity tolerance must be a number of zero or more, got {tolerance!r}")
    if len(scores) != 2:
        raise InvalidInputError(f"parity compares two sides, got {len(scores)}")
    first, second = scores.values()
    if not first or len(first) != len(second):
        raise InvalidInputError(f"parity needs as many scores from each side, got {len(first)} and {len(second)}")
    diffs = [abs(float(a) - float(b)) for a, b in zip(first, second, strict=True)]
    # A NaN score never passes: nan <= tolerance is False, and max() keeps it visible in the figures.
    worst = math.nan if any(math.isnan(d) for d in diffs) else max(diffs)
    return Parity(
        rows=len(diffs),
        max_abs_diff=worst,
        mean_abs_diff=sum(diffs) / len(diffs),
        tolerance=float(tolerance),
        ok=worst <= tolerance,
    )


class _Machine:
    """The recorded state machine of one rollout: refuses a transition it does not allow."""

    def __init__(self, ref: ModelRef, labels: Sequence[str], log: EventLog, actor: str | None) -> None:
        self.ref = ref
        self.prefix = f"hybrid {'+'.join(labels)}"
        self.log = log
        self.actor = actor
        self.states: list[str] = []

    @property
    def state(self) -> str | None:
        return self.states[-1] if self.states else None

    def go(self, state: str, figures: Mapping[str, Any]) -> None:
        current = self.state
        if current is not None and state not in TRANSITIONS[current]:
            raise ConflictError(f"hybrid rollout cannot go from {current} to {state}")
        detail = f"{self.prefix}: {current or 'start'} -> {state}"
        self.log.record_event(
            self.ref.name, self.ref.version, "deployment", detail, reason=_reason(figures), actor=self.actor
        )
        self.states.append(state)


def _reason(figures: Mapping[str, Any]) -> str:
    """Figures as compact JSON within what the registry keeps: the ``why`` text is cut, then the bulkiest figures
    are left out (per-side figures first; the event's state and ``why`` say the rest), so it stays valid JSON."""
    data = dict(figures)
    if isinstance(data.get("why"), str):
        data["why"] = data["why"][:_WHY_MAX]
    if isinstance(data.get("restore_errors"), dict):
        data["restore_errors"] = {k: str(v)[:200] for k, v in data["restore_errors"].items()}
    for droppable in ("", "sides", "previous", "analysis", "restore_errors", "parity"):
        if droppable:
            data.pop(droppable, None)
        text = json.dumps(data, separators=(",", ":"), default=_plain)
        if len(text) <= _REASON_MAX:
            return text
    return json.dumps({"why": data.get("why", "")}, separators=(",", ":"))


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def _figures(deployment: Deployment | None) -> dict[str, Any] | None:
    if deployment is None:
        return None
    return {
        "stable": deployment.stable_version,
        "canary": deployment.canary_version,
        "percent": deployment.canary_percent,
        "ready": deployment.ready,
    }


class HybridRollout:
    """Roll one version out to two sides (deploy targets) at once; see the module docstring for the states.

    Args:
        sides: the two sides, e.g. ``Side("local", local_target)`` and ``Side("sagemaker", sagemaker_target)``.
        log: where transitions are recorded (the registry).
        canary_percent: the canary's share on each side during the canary state (1-99).
        ready_timeout_s: budget of each wait until ready (per side and step).
        tolerance: the largest absolute score difference parity allows.
        analysis: decides promote or roll back from both canaries (None: promote when parity holds).
        resolve: the :class:`ModelRef` of a previous version label, to redeploy it on a side already promoted
            when the other side fails to promote (None: such a side is reported in ``restore_errors``).
        actor: who the events name (None: the registry's user).
    """

    def __init__(
        self,
        sides: Sequence[Side],
        log: EventLog,
        *,
        canary_percent: int = 10,
        ready_timeout_s: float = 600.0,
        tolerance: float = 1e-6,
        analysis: Analysis | None = None,
        resolve: Callable[[str], ModelRef] | None = None,
        actor: str | None = None,
    ) -> None:
        if len(sides) != 2 or sides[0].label == sides[1].label:
            raise InvalidInputError("a hybrid rollout needs two sides with different labels")
        check_traffic_percent(canary_percent)
        if canary_percent == 100:
            raise InvalidInputError("hybrid canary percent must be 1-99 (the canary state keeps the stable version)")
        if isinstance(ready_timeout_s, bool) or not isinstance(ready_timeout_s, (int, float)) or ready_timeout_s < 0:
            raise InvalidInputError(f"ready timeout must be zero or more seconds, got {ready_timeout_s!r}")
        compare({"a": [0.0], "b": [0.0]}, tolerance)  # the same check of the tolerance, before anything moves
        self.sides = list(sides)
        self.log = log
        self.canary_percent = canary_percent
        self.ready_timeout_s = float(ready_timeout_s)
        self.tolerance = tolerance
        self.analysis = analysis
        self.resolve = resolve
        self.actor = actor

    def run(self, ref: ModelRef, rows: Sequence[Mapping[str, Any]]) -> Outcome:
        """Roll ``ref`` out to both sides; ``rows`` (feature objects) are what parity sends to both.

        Returns:
            The outcome: ``promoted`` on both, or ``rolled_back`` on both (with why).

        Raises:
            InvalidInputError: no rows, or a bad name (before anything is recorded).
            ConflictError: a side already has a canary in trial (before anything is recorded).
        """
        check_rows(rows, "v2")
        previous: dict[str, Deployment | None] = {}
        for side in self.sides:
            current = _status(side, ref)
            if current is not None and current.canary_version is not None:
                raise ConflictError(
                    f"{side.label} deployment {current.name!r} has canary {current.canary_version!r} in trial:"
                    " promote or roll it back before a hybrid rollout"
                )
            previous[side.label] = current
        machine = _Machine(ref, [s.label for s in self.sides], self.log, self.actor)
        machine.go(
            PENDING,
            {"version": ref.version, "canary_percent": self.canary_percent, "previous": _all(previous)},
        )
        for side in self.sides:
            name = side.deployment_name(ref)
            percent = self.canary_percent if previous[side.label] is not None else 100
            try:
                side.target.deploy(ref, traffic_percent=percent)
                side.target.wait_until_ready(name, timeout_s=self.ready_timeout_s)
            except HybridmlError as exc:
                return self._roll_back(machine, ref, previous, f"{side.label}: deploy failed: {exc.message}", {})
        canaries = {side.label: side.target.status(side.deployment_name(ref)) for side in self.sides}
        machine.go(CANARY, {"sides": {k: _figures(v) for k, v in canaries.items()}})
        if self.analysis is not None:
            verdict = self.analysis(canaries)
            if not verdict.promote:
                why = f"analysis: {verdict.reason}"
                return self._roll_back(machine, ref, previous, why, {"analysis": dict(verdict.figures)})
            analysis_figures: dict[str, Any] = {"analysis": {"reason": verdict.reason, **dict(verdict.figures)}}
        else:
            analysis_figures = {}
        try:
            parity = self._parity(ref, rows)
        except HybridmlError as exc:
            return self._roll_back(machine, ref, previous, f"parity: {exc.message}", analysis_figures)
        parity_figures = {"parity": _parity_figures(parity), **analysis_figures}
        if not parity.ok:
            why = (
                f"parity: max |score difference| {parity.max_abs_diff:.6g} > tolerance {parity.tolerance:g}"
                f" over {parity.rows} rows"
            )
            return self._roll_back(machine, ref, previous, why, parity_figures, parity)
        promoted: list[Side] = []
        for side in self.sides:
            name = side.deployment_name(ref)
            try:
                if previous[side.label] is not None:
                    side.target.promote(name)
                side.target.wait_until_ready(name, timeout_s=self.ready_timeout_s)
            except HybridmlError as exc:
                why = f"{side.label}: promote failed: {exc.message}"
                return self._roll_back(machine, ref, previous, why, parity_figures, parity)
            promoted.append(side)
        final = {side.label: _status(side, ref) for side in self.sides}
        machine.go(PROMOTED, {"sides": _all(final), **parity_figures})
        return Outcome(PROMOTED, f"promoted on {' and '.join(final)}", final, parity, machine.states)

    def _parity(self, ref: ModelRef, rows: Sequence[Mapping[str, Any]]) -> Parity:
        """Send ``rows`` to both sides with the canary answering everything, and compare the scores."""
        scores: dict[str, list[float]] = {}
        for side in self.sides:
            name = side.deployment_name(ref)
            if side.target.status(name).canary_version is not None:
                # The parity window: the new version answers all of this side's requests, stable stays deployed.
                side.target.set_traffic(name, 100)
            try:
                scores[side.label] = side.target.invoke(name, rows, protocol="v2")
            except HybridmlError as exc:
                raise type(exc)(f"{side.label} did not answer: {exc.message}") from exc
        return compare(scores, self.tolerance)

    def _roll_back(
        self,
        machine: _Machine,
        ref: ModelRef,
        previous: Mapping[str, Deployment | None],
        why: str,
        figures: Mapping[str, Any],
        parity: Parity | None = None,
    ) -> Outcome:
        """Put every side back on what it served before the rollout, record why, and return the outcome."""
        errors: dict[str, str] = {}
        for side in self.sides:
            try:
                self._restore(side, ref, previous[side.label])
            except HybridmlError as exc:
                errors[side.label] = exc.message
        final = {side.label: _status(side, ref) for side in self.sides}
        record = {"why": why, "sides": _all(final), **figures}
        if errors:
            record["restore_errors"] = errors
        machine.go(ROLLED_BACK, record)
        return Outcome(ROLLED_BACK, why, final, parity, machine.states, errors)

    def _restore(self, side: Side, ref: ModelRef, before: Deployment | None) -> None:
        name = side.deployment_name(ref)
        current = _status(side, ref)
        if before is None:
            if current is not None:
                side.target.delete(name)  # the side served nothing before: it serves nothing again
            return
        if current is None:
            raise NotFoundError(f"{side.label} deployment {name!r} is gone; it served {before.stable_version!r}")
        if current.canary_version is not None:
            side.target.rollback(name)
        elif current.stable_version != before.stable_version:
            if self.resolve is None:
                raise ConflictError(
                    f"{side.label} already serves {current.stable_version!r}; no way to redeploy"
                    f" {before.stable_version!r} was given"
                )
            side.target.deploy(self.resolve(before.stable_version), traffic_percent=100)
        else:
            return  # already on the previous version (a failed deploy leaves it serving)
        side.target.wait_until_ready(name, timeout_s=self.ready_timeout_s)


def _status(side: Side, ref: ModelRef) -> Deployment | None:
    try:
        return side.target.status(side.deployment_name(ref))
    except NotFoundError:
        return None


def _all(deployments: Mapping[str, Deployment | None]) -> dict[str, Any]:
    return {label: _figures(d) for label, d in deployments.items()}


def _parity_figures(parity: Parity) -> dict[str, Any]:
    return {
        "rows": parity.rows,
        "max_abs_diff": None if math.isnan(parity.max_abs_diff) else round(parity.max_abs_diff, 9),
        "mean_abs_diff": None if math.isnan(parity.mean_abs_diff) else round(parity.mean_abs_diff, 9),
        "tolerance": parity.tolerance,
        "ok": parity.ok,
    }
