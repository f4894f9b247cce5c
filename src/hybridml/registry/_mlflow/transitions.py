"""Status and alias changes: the champion rule of core.approval, applied as compare-and-set under the model lock."""

from __future__ import annotations

from collections.abc import Callable

from hybridml.core import approval
from hybridml.core.approval import CHAMPION, Decision
from hybridml.errors import ConflictError, InvalidInputError
from hybridml.registry._mlflow import history
from hybridml.registry._mlflow.backend import STATUS_TAG, Backend, tag_value, version_number
from hybridml.registry._mlflow.lock import ModelLock
from hybridml.registry._mlflow.reads import aliases, get_version, to_info
from hybridml.registry.protocol import HistoryEvent, Policy, VersionInfo

LockFactory = Callable[[Backend, str, str], ModelLock]


def set_status(
    b: Backend,
    lock: LockFactory,
    name: str,
    version: int | str,
    status: str,
    *,
    reason: str,
    actor: str | None,
    expected: str | None = None,
) -> VersionInfo:
    """Set the approval status of a version and record who, when and why (see :func:`transition`).

    Raises:
        InvalidInputError: ``status`` is not one of the approval statuses.
        NotFoundError: the model or version does not exist (nothing is changed).
        ConflictError: the status is not ``expected``, or the transition is not allowed.
    """
    approval.check_status(status)
    if expected is not None:
        approval.check_status(expected)

    def fixed(current: VersionInfo, champion: VersionInfo | None) -> Decision:
        if expected is not None and current.status != expected:
            raise ConflictError(
                f"model {current.name!r} version {current.version} is {current.status}, not {expected}: "
                "someone changed it meanwhile; nothing was changed"
            )
        return Decision(status, reason)

    return transition(b, lock, name, version, fixed, actor=actor)


def transition(
    b: Backend, lock: LockFactory, name: str, version: int | str, policy: Policy, *, actor: str | None
) -> VersionInfo:
    """Apply ``policy``'s decision on the current state as one compare-and-set step.

    Under the model's lock: read the version and the champion, ask ``policy`` (None: no change), plan the
    change with :func:`hybridml.core.approval.plan` and write it. The writes are ordered so that the champion
    rule holds after each one, even if the writer dies between them: a champion being rejected loses the
    alias before its status changes; a version being approved gets the alias after its status changes.

    Raises:
        NotFoundError: the model or version does not exist (nothing is changed).
        ConflictError: the transition is not allowed, or the policy refused.
    """
    number = version_number(version)
    b.get_mv(name, number)  # a missing version fails before anything is written, even a lock claim
    who = actor or b.user
    with lock(b, name, who) as held:
        current = to_info(b.get_mv(name, number))
        champion_number = aliases(b, name).get(CHAMPION)
        champion = None
        if champion_number is not None:
            champion = current if champion_number == number else get_version(b, name, champion_number)
        decision = policy(current, champion)
        if decision is None:
            return get_version(b, name, number)
        try:
            change = approval.plan(number, current.status, decision.status, champion_number)
        except ConflictError as exc:
            raise ConflictError(f"model {name!r}: {exc.message}") from exc
        b.hook("planned", {"model": name, "version": number, "change": change})
        _apply(b, held, name, change, decision.reason, who)
    return get_version(b, name, number)


def _apply(b: Backend, held: ModelLock, name: str, change: approval.Change, reason: str, actor: str) -> None:
    number = change.version
    # Both events are encoded (and so ordered) before either write: status first, then the alias it caused.
    status_event = b.event(history.STATUS, number, f"{change.status_before} -> {change.status_after}", reason, actor)
    alias_event = None
    if change.moves_champion:
        alias_event = b.event(
            history.ALIAS,
            change.champion_after,
            f"{CHAMPION}: {_side(change.champion_before)} -> {_side(change.champion_after)}",
            reason,
            actor,
        )

    def write_status() -> None:
        held.check()
        b.set_mv_tag(name, number, STATUS_TAG, change.status_after)
        b.record(name, number, status_event, on_model=False)

    def write_alias() -> None:
        assert alias_event is not None
        held.check()
        if change.champion_after is None:
            b.retry(
                lambda: b.client.delete_registered_model_alias(name, CHAMPION), f"alias {CHAMPION} of model {name!r}"
            )
        else:
            target = str(change.champion_after)
            b.retry(
                lambda: b.client.set_registered_model_alias(name, CHAMPION, target),
                f"alias {CHAMPION} of model {name!r}",
            )
        b.record(name, change.champion_after, alias_event, on_model=True)

    if change.removes_champion:
        write_alias()
        b.hook("alias-written", {"model": name, "version": number})
        write_status()
    else:
        write_status()
        b.hook("status-written", {"model": name, "version": number})
        if alias_event is not None:
            write_alias()


def set_alias(
    b: Backend, lock: LockFactory, name: str, alias: str, version: int | str, *, reason: str, actor: str | None
) -> None:
    """Point ``alias`` of ``name`` at ``version`` and record the move, under the model's lock.

    Raises:
        InvalidInputError: the alias name is not allowed by MLflow (e.g. ``latest`` or ``v3``).
        NotFoundError: the model or version does not exist (nothing is changed).
        ConflictError: ``alias`` is ``champion`` and the version is not Approved.
    """
    number = version_number(version)
    b.get_mv(name, number)
    who = actor or b.user
    with lock(b, name, who) as held:
        current = to_info(b.get_mv(name, number))
        try:
            approval.check_alias(alias, number, current.status)
        except ConflictError as exc:
            raise ConflictError(f"model {name!r}: {exc.message}") from exc
        old = aliases(b, name).get(alias)
        event = b.event(history.ALIAS, number, f"{alias}: {_side(old)} -> {number}", reason, who)
        b.hook("planned", {"model": name, "version": number, "alias": alias})
        held.check()
        b.retry(
            lambda: b.client.set_registered_model_alias(name, alias, str(number)), f"alias {alias!r} of model {name!r}"
        )
        b.record(name, number, event, on_model=True)


def set_version_tag(b: Backend, name: str, version: int | str, key: str, value: str) -> None:
    """Set one tag of a version (an upsert, retried when contended; no lock: no rule depends on it).

    Raises:
        InvalidInputError: ``key`` is one the registry keeps itself (status, history): use set_status.
        NotFoundError: the model or version does not exist.
    """
    if key == STATUS_TAG or key.startswith(history.HISTORY_PREFIX):
        raise InvalidInputError(f"tag {key!r} is kept by the registry itself; change a status with set_status")
    number = version_number(version)
    b.get_mv(name, number)
    b.set_mv_tag(name, number, key, tag_value(value))


def record_event(
    b: Backend, name: str, version: int | str, action: str, detail: str, *, reason: str, actor: str | None
) -> HistoryEvent:
    """Append one event of another part of the platform (deploy, canary, mirror, monitor) to a version's history.

    No lock: it changes no state a rule depends on, and each event is its own tag, so writers never collide.

    Raises:
        InvalidInputError: ``action`` is not one of :data:`history.RECORDED_ACTIONS`.
        NotFoundError: the model or version does not exist (nothing is written).
    """
    if action not in history.RECORDED_ACTIONS:
        raise InvalidInputError(
            f"history action {action!r} cannot be recorded; use one of {', '.join(history.RECORDED_ACTIONS)}"
        )
    number = version_number(version)
    b.get_mv(name, number)
    event = b.event(action, number, detail, reason, actor)
    b.record(name, number, event, on_model=False)
    decoded = history.decode(name, *event)
    assert decoded is not None  # encode and decode are inverses
    return decoded


def _side(version: int | None) -> str:
    return "none" if version is None else str(version)
