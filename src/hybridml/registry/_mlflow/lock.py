"""A per-model lock made of MLflow tags, so that status and alias changes are compare-and-set.

MLflow has no transactions across tag and alias writes and no conditional write: a tag write is an upsert
(last writer wins), so "write a token, read it back" is not enough (two writers can each read back their own
token if their write-read pairs interleave). What MLflow does give is one linearisable store (one database
behind the client or server): a write that has been acknowledged is seen by every read that starts later.
(An MLflow server that sends reads to a lagging read replica breaks that; point it at the primary.)
The lock relies on that alone:

1. wait until the model carries no live claim tag (``hybridml.lock.<token>``);
2. write our own claim under a key no one else uses (a fresh random token per attempt) holding who, since
   when and until when;
3. read the model's claims again. No other live claim: we hold the lock. An older claim: withdraw ours
   (delete it) and start again. Only younger claims: wait for them to withdraw (they see ours as older).

Why two holders are impossible: say P and Q both hold, and P's claim write was acknowledged first. Q's check
read started after Q's own write was acknowledged, so after P's, and saw P's claim unless P had deleted it;
P deletes its claim only after it stopped holding (or withdrew without holding). So Q cannot have seen "no
other live claim" while P held. The age order only decides who waits for whom (progress, not safety), so
client clocks matter only for it and for expiry. A write that lands late (a timed-out request the server
still applied) carries a token its writer never uses again: it can only make others wait, never let anyone in.

Expiry: a claim is live until ``expires`` (wall clock, ``lease_s`` after it was written), so the claim of a
crashed holder stops counting then and is deleted by whoever sees it. As with every lease, a holder that
stalls past its lease could overlap with the next one; :meth:`ModelLock.check`, called before every write
made under the lock, refuses to go on once three quarters of the lease are spent (monotonic clock).
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from hybridml.errors import ConflictError, HybridmlError
from hybridml.registry._mlflow.backend import Backend
from hybridml.registry._mlflow.history import iso_utc

LOCK_PREFIX = "hybridml.lock."

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    """One writer's claim on a model's lock."""

    token: str
    holder: str
    since: float
    expires: float

    @property
    def key(self) -> str:
        """The registered-model tag that holds it."""
        return LOCK_PREFIX + self.token

    @property
    def rank(self) -> tuple[float, str]:
        """Older first; the token breaks ties."""
        return (self.since, self.token)

    def encode(self) -> str:
        """The tag value."""
        return json.dumps({"holder": self.holder[:200], "since": self.since, "expires": self.expires})

    @classmethod
    def decode(cls, key: str, value: str) -> Claim | None:
        """The claim a tag holds, or None if the tag is not a (well-formed) claim."""
        if not key.startswith(LOCK_PREFIX):
            return None
        try:
            raw: dict[str, Any] = json.loads(value)
            return cls(key.removeprefix(LOCK_PREFIX), str(raw["holder"]), float(raw["since"]), float(raw["expires"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return None


def claims_of(tags: dict[str, str]) -> list[Claim]:
    """Every claim among a registered model's tags."""
    return [c for c in (Claim.decode(k, v) for k, v in tags.items()) if c is not None]


class ModelLock:
    """Mutual exclusion among every writer of one registered model (see the module docstring for why it holds).

    Use as a context manager around a read-compare-write; call :meth:`check` before each write.
    """

    def __init__(
        self,
        backend: Backend,
        name: str,
        *,
        actor: str,
        lease_s: float = 60.0,
        wait_s: float = 90.0,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Prepare (nothing is written until :meth:`acquire`).

        Args:
            backend: The registry's MLflow backend.
            name: The registered model whose changes are serialised.
            actor: Recorded in the claim, so a waiting writer can say who holds the lock.
            lease_s: How long a claim counts; a crashed holder blocks others at most this long.
            wait_s: How long :meth:`acquire` waits for others before :class:`ConflictError`.
            wall: Wall clock (seconds since the epoch) for claims' times, shared by every writer.
            monotonic: Clock for this writer's own lease accounting.
        """
        self._b = backend
        self.name = name
        self.actor = actor
        self.lease_s = lease_s
        self.wait_s = wait_s
        self._wall = wall
        self._mono = monotonic
        self._claim: Claim | None = None
        self._claimed_at = 0.0
        self.held = False

    def __enter__(self) -> ModelLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def acquire(self) -> None:
        """Block until this writer holds the lock.

        Raises:
            ConflictError: others held it for longer than ``wait_s`` (the message says who).
            NotFoundError: the model does not exist.
        """
        try:
            self._acquire()
        except BaseException:
            self._withdraw()  # never leave a claim behind that nobody will release
            raise

    def _acquire(self) -> None:
        deadline = self._mono() + self.wait_s
        pause = 0.01
        while True:
            now = self._wall()
            claims = self._read()
            mine = self._claim
            for stale in claims:
                if stale.expires <= now and (mine is None or stale.token != mine.token):
                    self._delete(stale)
            live = [c for c in claims if c.expires > now and (mine is None or c.token != mine.token)]
            if mine is not None and self._mono() - self._claimed_at > self.lease_s / 2:
                self._withdraw()  # waited so long that our claim is half spent: start again with a fresh one
                continue
            if mine is None:
                if live:
                    self._b.hook("lock-busy", {"model": self.name, "holders": [c.holder for c in live]})
                    pause = self._pause(deadline, live, pause)
                    continue
                self._b.hook("lock-free", {"model": self.name})
                self._write_claim()
                continue
            if all(c.token != mine.token for c in claims):
                self._claim = None  # someone took our claim for expired and deleted it: start again
                continue
            if not live:
                self.held = True
                self._b.hook("lock-acquired", {"model": self.name, "token": mine.token})
                return
            if any(c.rank < mine.rank for c in live):
                self._withdraw()
                self._b.hook("lock-withdrew", {"model": self.name, "token": mine.token})
            pause = self._pause(deadline, live, pause)

    def check(self) -> None:
        """Refuse to write under a lock that is not held, or whose lease is nearly spent.

        Raises:
            ConflictError: the lease is (nearly) over; the caller must not write.
        """
        if not self.held:
            raise ConflictError(f"model {self.name!r}: change attempted without holding its lock")
        if self._mono() - self._claimed_at > self.lease_s * 0.75:
            raise ConflictError(
                f"model {self.name!r}: the change took longer than its {self.lease_s:.0f} s lease; "
                "stopped before writing, try again"
            )

    def release(self) -> None:
        """Give the lock up (best effort: an undeleted claim expires by itself)."""
        self.held = False
        self._withdraw()

    # ------------------------------------------------------------------ internals

    def _read(self) -> list[Claim]:
        return claims_of(dict(self._b.get_model(self.name).tags or {}))

    def _write_claim(self) -> None:
        since = self._wall()
        claim = Claim(secrets.token_hex(8), self.actor, since, since + self.lease_s)
        # Remembered before writing: if the write fails after the server applied it, release() still deletes it.
        self._claim = claim
        self._claimed_at = self._mono()
        self._b.retry(
            lambda: self._b.client.set_registered_model_tag(self.name, claim.key, claim.encode()),
            f"lock of model {self.name!r}",
        )
        self._b.hook("lock-claimed", {"model": self.name, "token": claim.token})

    def _withdraw(self) -> None:
        claim, self._claim = self._claim, None
        if claim is not None:
            self._delete(claim)

    def _delete(self, claim: Claim) -> None:
        try:
            self._b.retry(
                lambda: self._b.client.delete_registered_model_tag(self.name, claim.key),
                f"lock of model {self.name!r}",
            )
        except HybridmlError as exc:
            _log.warning(
                "could not delete lock claim %s of model %r (it expires by itself): %s", claim.key, self.name, exc
            )

    def _pause(self, deadline: float, blockers: list[Claim], pause: float) -> float:
        if self._mono() + pause > deadline:
            self._withdraw()
            oldest = min(blockers, key=lambda c: c.rank)
            raise ConflictError(
                f"model {self.name!r} is being changed by {oldest.holder} (since {iso_utc(oldest.since)}); "
                f"gave up after {self.wait_s:.0f} s, try again"
            )
        self._b.sleep(random.uniform(pause / 2, pause))  # noqa: S311 - jitter, not security
        return min(pause * 2, 0.5)
