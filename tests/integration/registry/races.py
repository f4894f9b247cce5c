"""Helpers of the registry race tests: force an interleaving with hooks, and check that a history is one story."""

from __future__ import annotations

import threading
from typing import Any

from hybridml.core.approval import APPROVED, PENDING
from hybridml.errors import HybridmlError
from hybridml.registry import CHAMPION, HistoryEvent, ModelRegistry, Registry, VersionInfo


def replay(reg: ModelRegistry, name: str) -> list[HistoryEvent]:
    """Check that the history is one consistent story that ends where the registry is; return it.

    Every status change starts from the status the previous change of that version left; every champion move
    starts where the previous one ended and reaches only an Approved version.
    """
    events = reg.history(name)
    status: dict[int, str] = {}
    champion: int | None = None
    for event in events:
        assert event.model == name
        if event.action == "registered":
            assert event.version is not None
            status[event.version] = PENDING
        elif event.action == "status":
            assert event.version is not None
            before, after = event.detail.split(" -> ")
            assert before == status[event.version], f"{event} does not follow {status}: {events}"
            status[event.version] = after
        elif event.detail.startswith(f"{CHAMPION}: "):
            before, after = event.detail.removeprefix(f"{CHAMPION}: ").split(" -> ")
            assert before == ("none" if champion is None else str(champion)), f"{event} after {champion}: {events}"
            champion = None if after == "none" else int(after)
            assert champion is None or status[champion] == APPROVED, f"champion at a non-approved version: {events}"
    assert {v.version: v.status for v in reg.list_versions(name)} == status
    assert reg.aliases(name).get(CHAMPION) == champion
    assert champion is None or status[champion] == APPROVED, f"champion at a non-approved version: {events}"
    return events


def forced_race(
    uri: str, name: str, first: tuple[str, str, str | None], second: tuple[str, str, str | None], point: str
) -> tuple[VersionInfo, VersionInfo | HybridmlError, list[str]]:
    """Run ``first``; at its hook ``point`` start ``second`` in another thread and wait until it is blocked.

    Returns the first result, the second result (or its error) and the hook points the second writer passed.
    """
    second_points: list[str] = []
    blocked = threading.Event()

    def second_hook(at: str, details: dict[str, Any]) -> None:
        second_points.append(at)
        if at == "lock-busy":
            blocked.set()

    out: dict[str, VersionInfo | HybridmlError] = {}

    def run_second() -> None:
        actor, status, expected = second
        try:
            out["second"] = Registry(uri, user=actor, hook=second_hook).set_status(
                name, 1, status, reason=f"{actor}'s review", expected=expected
            )
        except HybridmlError as exc:
            out["second"] = exc

    thread = threading.Thread(target=run_second)

    def first_hook(at: str, details: dict[str, Any]) -> None:
        if at == point and not thread.is_alive() and "second" not in out:
            thread.start()
            assert blocked.wait(60), "the second writer never met the first one's lock"

    actor, status, expected = first
    result = Registry(uri, user=actor, hook=first_hook).set_status(
        name, 1, status, reason=f"{actor}'s review", expected=expected
    )
    thread.join(120)
    assert not thread.is_alive()
    return result, out["second"], second_points
