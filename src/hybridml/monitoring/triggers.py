"""Retraining triggers: events in, one debounced and de-duplicated retraining run out, every decision logged.

A :class:`Trigger` receives :class:`Event` s from its sources (a watched folder, an S3 prefix, the Alertmanager
webhook, a schedule: ``triggers_sources``, ``triggers_webhook``) and decides for each one:

- ``duplicate``: its key (file + size + mtime, S3 key + ETag, alert fingerprint + start, schedule slot) was seen
  before, by this process or an earlier one (the keys persist in the state file);
- ``ignored``: it cannot start a run (a resolved alert, another alert or model, no data to train on);
- ``debounced``: it opens or joins the debounce window; the run starts once no event arrived for ``debounce_s``
  (or ``max_wait_s`` after the first), so a burst of events starts one run, on the newest data of the burst;
- ``queued``: a run is in progress; every such event joins one follow-up run, started when that run ends.

:meth:`Trigger.tick` starts due runs through a launcher (``triggers_launch``: a local ``hybridml run`` or a
Kubeflow run) and records how they end (``started``, ``finished``, ``failed``). State lives in
``HYBRIDML_HOME/triggers/state.json`` (written atomically) and decisions in ``triggers/decisions.jsonl``, which
``hybridml trigger status`` reads.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hybridml.errors import HybridmlError, InvalidInputError

STATE_VERSION = 1
MAX_SEEN = 100_000  # keys kept for de-duplication; the oldest go first beyond this
MAX_RUNS = 200  # run records kept in the state file
LOG_ROTATE_BYTES = 10 * 1024 * 1024  # the decision log is renamed to decisions.jsonl.1 beyond this

DECISIONS = ("started", "debounced", "duplicate", "queued", "ignored", "finished", "failed")


@dataclass(frozen=True)
class Event:
    """Something that may start a retraining run.

    Attributes:
        source: ``folder``, ``s3``, ``alert`` or ``schedule``.
        key: identity used for de-duplication (the same key never starts a second run).
        at: when it was observed (seconds since the epoch, the trigger's clock).
        data_uri: new data the event brings (a file or S3 object), empty for alerts and schedules.
        model: the model an alert names (empty: the trigger's own model).
        detail: one human-readable line.
    """

    source: str
    key: str
    at: float
    data_uri: str = ""
    model: str = ""
    detail: str = ""

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Event:
        """An event read back from the state file."""
        return cls(**{k: raw[k] for k in ("source", "key", "at", "data_uri", "model", "detail") if k in raw})


@dataclass(frozen=True)
class Decision:
    """What the trigger did with an event, or with a run (``started``, ``finished``, ``failed``)."""

    decision: str
    reason: str
    at: float
    event: Event | None = None
    run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """One decision-log record."""
        return {
            "at": _iso(self.at),
            "ts": self.at,
            "decision": self.decision,
            "reason": self.reason,
            "event": asdict(self.event) if self.event is not None else None,
            "run_id": self.run_id,
        }


@dataclass(frozen=True)
class RunRequest:
    """One retraining run to start."""

    run_id: str
    model: str
    data_uri: str
    traffic_percent: int
    reason: str


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended: ``succeeded`` or ``failed``, a one-line detail, and the version it registered if known."""

    status: str
    detail: str
    version: int | None = None


class Launcher(Protocol):
    """Starts retraining runs and tells when they end.

    ``start`` returns what is needed to find the run again (kept in the run record, so a restarted trigger can
    still poll a run started before); ``poll`` returns None while the run is in progress.
    """

    def start(self, request: RunRequest) -> dict[str, Any]:
        """Start the run; returns launch details (process id and files, or the Kubeflow run id)."""
        ...

    def poll(self, run: dict[str, Any]) -> RunOutcome | None:
        """The outcome of the run recorded as ``run`` (with the launch details), or None while it runs."""
        ...


@dataclass(frozen=True)
class TriggerConfig:
    """What the trigger retrains and how it paces runs.

    Attributes:
        model: registered model name the runs train.
        data_uri: data for events that bring none (alerts, schedule); empty: such events are ignored.
        debounce_s: a run starts once no new event arrived for this long.
        max_wait_s: ...or this long after the first event of a burst, whichever comes first.
        traffic_percent: the run's ``traffic`` (below 100: the new version is canaried when approved).
    """

    model: str
    data_uri: str = ""
    debounce_s: float = 30.0
    max_wait_s: float = 300.0
    traffic_percent: int = 10

    def __post_init__(self) -> None:
        if not self.model:
            raise InvalidInputError("a trigger needs the model it retrains (--model)")
        if self.debounce_s < 0 or self.max_wait_s < self.debounce_s:
            raise InvalidInputError(
                f"debounce must be >= 0 and max wait >= debounce, got {self.debounce_s} and {self.max_wait_s}"
            )
        if not 1 <= self.traffic_percent <= 100:
            raise InvalidInputError(f"traffic percent must be between 1 and 100, got {self.traffic_percent}")


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _empty_state() -> dict[str, Any]:
    return {"version": STATE_VERSION, "seen": {}, "pending": None, "queued": [], "runs": [], "sources": {}}


class TriggerStore:
    """The trigger's files under ``root`` (``HYBRIDML_HOME/triggers``): state JSON and decision log."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def state_file(self) -> Path:
        """Seen keys, the open debounce window, the queued follow-up, runs and per-source state."""
        return self.root / "state.json"

    @property
    def decision_log(self) -> Path:
        """One JSON line per decision."""
        return self.root / "decisions.jsonl"

    def runs_dir(self, run_id: str) -> Path:
        """Where a local run keeps its output, error log and exit code."""
        return self.root / "runs" / run_id

    def load(self) -> dict[str, Any]:
        """The saved state, or an empty one.

        Raises:
            InvalidInputError: the state file is not this format (it is never overwritten silently).
        """
        try:
            raw = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return _empty_state()
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"cannot read trigger state {self.state_file}: {exc}") from exc
        if not isinstance(raw, dict) or raw.get("version") != STATE_VERSION:
            raise InvalidInputError(f"trigger state {self.state_file} is not version {STATE_VERSION}")
        return {**_empty_state(), **raw}

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` atomically (a crash leaves the old file or the new one, never half of one)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".state-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(state, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.state_file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def append(self, decisions: list[Decision]) -> None:
        """Append decisions to the log (rotated once beyond 10 MiB)."""
        if not decisions:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        log = self.decision_log
        if log.is_file() and log.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(log, log.with_name(log.name + ".1"))
        lines = "".join(json.dumps(d.to_dict()) + "\n" for d in decisions)
        with log.open("a") as handle:
            handle.write(lines)

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` decisions, oldest first."""
        if not self.decision_log.is_file():
            return []
        lines = self.decision_log.read_text().splitlines()
        return [json.loads(line) for line in lines[-limit:] if line.strip()] if limit > 0 else []


class Trigger:
    """Decides, for each event, whether and when a retraining run starts (thread safe).

    Args:
        config: model, fallback data, debounce and traffic.
        store: where state and decisions are kept.
        launcher: starts runs and polls them.
        clock: seconds since the epoch (injected in tests).
        on_decision: called with each decision once it is logged (the CLI prints them).
        on_run_end: called with a run's record once it has ended (the CLI writes it into the registry history
            of the version it registered); its errors are the caller's to handle.
    """

    def __init__(
        self,
        config: TriggerConfig,
        store: TriggerStore,
        launcher: Launcher,
        clock: Callable[[], float] = time.time,
        on_decision: Callable[[Decision], None] | None = None,
        on_run_end: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.launcher = launcher
        self.clock = clock
        self.on_decision = on_decision
        self.on_run_end = on_run_end
        self._lock = threading.RLock()
        self._state = store.load()

    # ---------------------------------------------------------------------------------------------- events

    def submit(self, event: Event) -> Decision:
        """Decide what ``event`` does (see the module docstring); the decision is logged and returned."""
        with self._lock:
            now = self.clock()
            decision = self._decide(event, now)
            self._commit([decision])
            return decision

    def ignore(self, event: Event, reason: str) -> Decision:
        """Log that ``event`` starts nothing, and why (a source's own judgement, e.g. a resolved alert)."""
        with self._lock:
            decision = Decision("ignored", reason, self.clock(), event)
            self._commit([decision])
            return decision

    def _decide(self, event: Event, now: float) -> Decision:
        state = self._state
        if event.model and event.model != self.config.model:
            return Decision(
                "ignored", f"names model {event.model!r}; this trigger retrains {self.config.model!r}", now, event
            )
        if not event.data_uri and not self.config.data_uri:
            return Decision("ignored", "brings no data and the trigger has none configured (--data)", now, event)
        seen_at = state["seen"].get(event.key)
        if seen_at is not None:
            return Decision(
                "duplicate", f"key already seen at {_iso(seen_at)}; it never starts a second run", now, event
            )
        state["seen"][event.key] = now
        if len(state["seen"]) > MAX_SEEN:
            for key in sorted(state["seen"], key=state["seen"].get)[: len(state["seen"]) - MAX_SEEN]:
                del state["seen"][key]
        running = self._running()
        if running is not None:
            state["queued"].append(asdict(event))
            waiting = len(state["queued"])
            return Decision(
                "queued",
                f"run {running['run_id']} is in progress; {waiting} event(s) wait for one follow-up run",
                now,
                event,
                running["run_id"],
            )
        pending = state["pending"]
        if pending is None:
            pending = state["pending"] = {"opened_at": now, "events": []}
        pending["events"].append(asdict(event))
        pending["last_at"] = now
        due = self._due(pending)
        count = len(pending["events"])
        return Decision(
            "debounced",
            f"{count} event(s) in the debounce window; one run starts at {_iso(due)} unless more arrive",
            now,
            event,
        )

    def _due(self, pending: dict[str, Any]) -> float:
        return min(
            float(pending["last_at"]) + self.config.debounce_s, float(pending["opened_at"]) + self.config.max_wait_s
        )

    # ------------------------------------------------------------------------------------------------- runs

    def tick(self) -> list[Decision]:
        """Record runs that ended, start the queued follow-up or a due debounced run; returns the decisions."""
        with self._lock:
            now = self.clock()
            decisions: list[Decision] = []
            running = self._running()
            if running is not None:
                ended = self._poll(running, now)
                if ended is None:
                    return []
                decisions.append(ended)
                if self._state["queued"]:
                    events = [Event.from_dict(e) for e in self._state["queued"]]
                    self._state["queued"] = []
                    why = f"follow-up for {len(events)} event(s) that arrived during run {running['run_id']}"
                    decisions.append(self._start(events, why, now))
            pending = self._state["pending"]
            if self._running() is None and pending is not None and now >= self._due(pending):
                events = [Event.from_dict(e) for e in pending["events"]]
                self._state["pending"] = None
                decisions.append(self._start(events, f"{len(events)} event(s) in one debounce window", now))
            if decisions:
                self._commit(decisions)
            return decisions

    def _running(self) -> dict[str, Any] | None:
        return next((r for r in self._state["runs"] if r["status"] == "running"), None)

    def _poll(self, run: dict[str, Any], now: float) -> Decision | None:
        try:
            outcome = self.launcher.poll(run)
        except HybridmlError as exc:
            outcome = RunOutcome("failed", f"cannot read the run's outcome: {exc.message}")
        if outcome is None:
            return None
        run.update(status=outcome.status, finished_at=now, detail=outcome.detail, version=outcome.version)
        if self.on_run_end is not None:
            self.on_run_end(dict(run))
        kind = "finished" if outcome.status == "succeeded" else "failed"
        return Decision(kind, outcome.detail, now, None, run["run_id"])

    def _start(self, events: list[Event], why: str, now: float) -> Decision:
        with_data = [e for e in events if e.data_uri]
        # Events arrive in order (a source submits a poll's files oldest first): the last one is the newest data.
        data_uri = with_data[-1].data_uri if with_data else self.config.data_uri
        run_id = f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now))}-{secrets.token_hex(3)}"
        request = RunRequest(run_id, self.config.model, data_uri, self.config.traffic_percent, why)
        record: dict[str, Any] = {
            "run_id": run_id,
            "model": request.model,
            "data_uri": data_uri,
            "traffic_percent": request.traffic_percent,
            "started_at": now,
            "finished_at": None,
            "status": "running",
            "detail": why,
            "version": None,
            "events": [e.key for e in events],
        }
        try:
            record["launch"] = self.launcher.start(request)
        except (HybridmlError, OSError) as exc:
            message = exc.message if isinstance(exc, HybridmlError) else f"{type(exc).__name__}: {exc}"
            record.update(status="failed", finished_at=now, detail=f"could not start: {message}")
            self._state["runs"] = [*self._state["runs"], record][-MAX_RUNS:]
            return Decision("failed", record["detail"], now, None, run_id)
        self._state["runs"] = [*self._state["runs"], record][-MAX_RUNS:]
        return Decision("started", f"{why}; data {data_uri}", now, None, run_id)

    # ------------------------------------------------------------------------------------------ source state

    def source_state(self, source_id: str) -> dict[str, Any] | None:
        """What a source kept from earlier polls (None: this source has never run here)."""
        with self._lock:
            value = self._state["sources"].get(source_id)
            return dict(value) if value is not None else None

    def set_source_state(self, source_id: str, value: dict[str, Any]) -> None:
        """Keep a source's state (its baseline, the next scheduled time) across restarts."""
        with self._lock:
            self._state["sources"][source_id] = value
            self.store.save(self._state)

    def is_seen(self, key: str) -> bool:
        """Whether an event with ``key`` was taken before."""
        with self._lock:
            return key in self._state["seen"]

    def mark_seen(self, keys: list[str], reason: str) -> None:
        """Take ``keys`` as seen without a run (a source's baseline), logging one ``ignored`` decision."""
        with self._lock:
            now = self.clock()
            for key in keys:
                self._state["seen"].setdefault(key, now)
            self._commit([Decision("ignored", f"{len(keys)} {reason}", now)])

    def snapshot(self) -> dict[str, Any]:
        """A copy of the state (runs, pending window, queued follow-up)."""
        with self._lock:
            copy: dict[str, Any] = json.loads(json.dumps(self._state))
            return copy

    def _commit(self, decisions: list[Decision]) -> None:
        self.store.save(self._state)
        self.store.append(decisions)
        if self.on_decision is not None:
            for decision in decisions:
                self.on_decision(decision)


@dataclass
class StatusReport:
    """What ``hybridml trigger status`` prints."""

    decisions: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    pending: dict[str, Any] | None
    queued: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """One JSON object."""
        return asdict(self)


def status(store: TriggerStore, limit: int = 20) -> StatusReport:
    """The last ``limit`` decisions and runs, the open debounce window and the queued follow-up."""
    state = store.load()
    runs = [
        {**{k: v for k, v in run.items() if k != "launch"}, "started": _iso(run["started_at"])}
        for run in state["runs"][-limit:]
    ]
    return StatusReport(decisions=store.recent(limit), runs=runs, pending=state["pending"], queued=state["queued"])


class PolledSource(Protocol):
    """A source the loop polls (``triggers_sources``)."""

    source_id: str

    def poll(self, trigger: Trigger) -> None:
        """Submit new events to ``trigger``."""
        ...


def run_loop(
    trigger: Trigger,
    sources: list[PolledSource],
    stop: threading.Event,
    *,
    poll_s: float = 2.0,
    on_error: Callable[[str], None] = lambda _message: None,
) -> None:
    """Poll every source and tick the trigger every ``poll_s`` seconds until ``stop`` is set.

    A source that fails (a folder removed, S3 unreachable) is reported through ``on_error`` and polled again
    next time; it never stops the loop or the other sources.
    """
    while not stop.is_set():
        for source in sources:
            try:
                source.poll(trigger)
            except (HybridmlError, OSError) as exc:
                on_error(f"{source.source_id}: {exc}")
        trigger.tick()
        stop.wait(poll_s)
