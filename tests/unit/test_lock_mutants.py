"""The registry's per-model lock (registry/_mlflow/lock.py) driven in process against an in-memory backend with fake
clocks: who waits for whom, expiry, the lease check, back-off and refusals (issue 12 found it untested in process:
only the integration races exercised it, in server processes that mutants never reach)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from hybridml.errors import ConflictError, NotFoundError, NotReadyError
from hybridml.registry._mlflow import lock as lock_module
from hybridml.registry._mlflow.history import iso_utc
from hybridml.registry._mlflow.lock import LOCK_PREFIX, Claim, ModelLock, claims_of

pytestmark = pytest.mark.unit

EPOCH = 1_700_000_000.0


class FakeBackend:
    """The three registry calls the lock makes, on a dict of tags; ``sleep`` advances the fake clock."""

    def __init__(self) -> None:
        self.now = 0.0  # monotonic seconds; the wall clock is EPOCH + now
        self.tags: dict[str, str] = {}
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.sleeps: list[float] = []
        self.on_read: Callable[[FakeBackend], None] | None = None
        self.reads = 0
        self.fail_delete = False
        self.client = self
        self.whats: set[str] = set()
        self.times: list[float] = []

    def _model(self, name: str) -> None:
        assert name == "m"

    def get_model(self, name: str) -> SimpleNamespace:
        self._model(name)
        self.reads += 1
        if self.reads > 2000:  # no scenario here needs more: a lock that never gives up is a failure, not a hang
            raise AssertionError("the lock kept reading without end")
        if self.on_read is not None:
            self.on_read(self)
        return SimpleNamespace(tags=dict(self.tags))

    def retry(self, op: Callable[[], Any], what: str) -> Any:
        self.whats.add(what)
        return op()

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        self._model(name)
        self.tags[key] = value

    def delete_registered_model_tag(self, name: str, key: str) -> None:
        self._model(name)
        if self.fail_delete:
            raise NotReadyError("registry down")
        self.tags.pop(key, None)

    def hook(self, event: str, data: dict[str, Any]) -> None:
        self.events.append((event, data))
        self.times.append(self.now)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def mine(self) -> list[Claim]:
        return [c for c in claims_of(self.tags) if c.holder == "me"]

    def put(self, token: str, holder: str, since: float, expires: float) -> None:
        claim = Claim(token, holder, EPOCH + since, EPOCH + expires)
        self.tags[claim.key] = claim.encode()


@pytest.fixture(autouse=True)
def no_jitter(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, float]]:
    """The longest pause of each jittered range, and the ranges asked for."""
    asked: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        asked.append((low, high))
        return high

    monkeypatch.setattr(lock_module.random, "uniform", uniform)
    return asked


def make(backend: FakeBackend, *, lease_s: float = 60.0, wait_s: float = 90.0) -> ModelLock:
    return ModelLock(
        backend,
        "m",
        actor="me",
        lease_s=lease_s,
        wait_s=wait_s,
        wall=lambda: EPOCH + backend.now,
        monotonic=lambda: backend.now,
    )


def names(backend: FakeBackend) -> list[str]:
    return [event for event, _ in backend.events]


def test_a_free_lock_is_claimed_held_and_released() -> None:
    backend = FakeBackend()
    backend.tags["other"] = "kept"
    backend.now = 5.0
    lock = make(backend, lease_s=30.0)
    with lock:
        assert lock.held is True
        [claim] = backend.mine()
        assert (claim.holder, claim.since, claim.expires) == ("me", EPOCH + 5.0, EPOCH + 35.0)
        assert len(claim.token) == 16 and int(claim.token, 16) >= 0  # 8 random bytes in hex
        assert names(backend) == ["lock-free", "lock-claimed", "lock-acquired"]
        assert backend.events[0][1] == {"model": "m"}
        assert backend.events[1][1] == backend.events[2][1] == {"model": "m", "token": claim.token}
        lock.check()
    assert lock.held is False
    assert backend.tags == {"other": "kept"}
    assert backend.sleeps == []
    assert backend.whats == {"lock of model 'm'"}


def test_defaults_are_a_minute_of_lease_and_90_s_of_waiting() -> None:
    lock = ModelLock(FakeBackend(), "m", actor="me")
    assert (lock.lease_s, lock.wait_s, lock.held) == (60.0, 90.0, False)


def test_check_refuses_without_the_lock_and_after_three_quarters_of_the_lease() -> None:
    backend = FakeBackend()
    backend.now = 10.0
    lock = make(backend, lease_s=40.0)
    with pytest.raises(ConflictError) as caught:
        lock.check()
    assert str(caught.value) == "model 'm': change attempted without holding its lock"
    lock.acquire()
    backend.now = 40.0  # exactly 3/4 of the lease after the claim: still allowed
    lock.check()
    backend.now = 40.001
    with pytest.raises(ConflictError) as caught:
        lock.check()
    assert str(caught.value) == (
        "model 'm': the change took longer than its 40 s lease; stopped before writing, try again"
    )


def test_a_live_claim_of_another_writer_is_waited_for_with_doubling_pauses_then_refused(
    no_jitter: list[tuple[float, float]],
) -> None:
    backend = FakeBackend()
    backend.put("aaaa", "bob", since=-10.0, expires=1000.0)
    lock = make(backend, wait_s=1.0)
    with pytest.raises(ConflictError) as caught:
        lock.acquire()
    assert str(caught.value) == (
        f"model 'm' is being changed by bob (since {iso_utc(EPOCH - 10.0)}); gave up after 1 s, try again"
    )
    # 0.01 doubling to 0.32 is 0.63 s; the next pause (0.5, the cap) would pass the 1 s deadline.
    assert backend.sleeps == [0.01, 0.02, 0.04, 0.08, 0.16, 0.32]
    assert no_jitter == [(p / 2, p) for p in backend.sleeps]
    assert backend.mine() == []
    assert set(names(backend)) == {"lock-busy"}
    assert backend.events[0][1] == {"model": "m", "holders": ["bob"]}
    assert lock.held is False


def test_pauses_are_capped_at_half_a_second() -> None:
    backend = FakeBackend()
    backend.put("aaaa", "bob", since=0.0, expires=1000.0)
    with pytest.raises(ConflictError):
        make(backend, wait_s=2.0).acquire()
    assert backend.sleeps == [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.5, 0.5]


def test_the_oldest_holder_is_named() -> None:
    backend = FakeBackend()
    backend.put("bbbb", "young", since=-1.0, expires=1000.0)
    backend.put("aaaa", "old", since=-9.0, expires=1000.0)
    with pytest.raises(ConflictError, match=r"^model 'm' is being changed by old \(since "):
        make(backend, wait_s=0.0).acquire()


@pytest.mark.parametrize(("expires", "waited"), [(0.0, False), (0.001, True)])
def test_a_claim_expiring_now_is_deleted_and_one_expiring_later_is_waited_for(expires: float, waited: bool) -> None:
    backend = FakeBackend()
    backend.put("dead", "crashed", since=-60.0, expires=expires)
    lock = make(backend)
    lock.acquire()
    assert lock.held is True
    assert (backend.sleeps != []) is waited
    assert [c.holder for c in claims_of(backend.tags)] == ["me"]  # the expired claim was deleted either way


def test_a_younger_claim_is_waited_for_without_withdrawing_ours() -> None:
    backend = FakeBackend()

    def younger_writer(b: FakeBackend) -> None:
        if b.reads == 2:  # it wrote just after us, then saw our older claim and withdrew
            b.put("zzzz", "carol", since=b.now + 1.0, expires=b.now + 61.0)
        elif b.reads == 3:
            del b.tags[LOCK_PREFIX + "zzzz"]

    backend.on_read = younger_writer
    backend.now = 100.0
    lock = make(backend)
    lock.acquire()
    assert lock.held is True
    assert names(backend) == ["lock-free", "lock-claimed", "lock-acquired"]
    assert len(backend.sleeps) == 1
    assert len(backend.mine()) == 1


def test_an_older_claim_seen_after_ours_makes_us_withdraw_and_wait() -> None:
    backend = FakeBackend()

    def older_writer(b: FakeBackend) -> None:
        if b.reads == 2:
            b.put("0000", "dave", since=b.now - 1.0, expires=b.now + 59.0)
        elif b.reads == 4:
            del b.tags[LOCK_PREFIX + "0000"]

    backend.on_read = older_writer
    lock = make(backend)
    lock.acquire()
    assert lock.held is True
    assert names(backend) == [
        "lock-free",
        "lock-claimed",
        "lock-withdrew",
        "lock-busy",
        "lock-free",
        "lock-claimed",
        "lock-acquired",
    ]
    first, second = backend.events[1][1]["token"], backend.events[5][1]["token"]
    assert first != second and backend.events[2][1] == {"model": "m", "token": first}
    assert [c.token for c in backend.mine()] == [second]


def test_a_claim_deleted_by_someone_else_is_written_again() -> None:
    backend = FakeBackend()

    def sweeper(b: FakeBackend) -> None:
        if b.reads == 2:  # another writer took our claim for expired and deleted it
            for claim in b.mine():
                del b.tags[claim.key]

    backend.on_read = sweeper
    lock = make(backend)
    lock.acquire()
    assert names(backend) == ["lock-free", "lock-claimed", "lock-free", "lock-claimed", "lock-acquired"]
    assert len(backend.mine()) == 1
    assert backend.sleeps == []


def test_a_claim_half_spent_while_waiting_is_replaced_by_a_fresh_one() -> None:
    backend = FakeBackend()

    def younger_that_stays(b: FakeBackend) -> None:
        if b.reads == 2:
            b.put("zzzz", "carol", since=b.now + 1.0, expires=b.now + 1000.0)

    backend.on_read = younger_that_stays
    lock = make(backend, lease_s=1.0, wait_s=0.7)
    with pytest.raises(ConflictError):
        lock.acquire()
    claimed = [data["token"] for event, data in backend.events if event == "lock-claimed"]
    assert len(claimed) == 1  # after 0.5 s (half the lease) it was withdrawn, then carol's live claim blocked
    assert "lock-busy" in names(backend)
    assert backend.mine() == []


def test_a_failure_while_acquiring_withdraws_our_claim() -> None:
    backend = FakeBackend()

    def gone(b: FakeBackend) -> None:
        if b.reads == 2:
            raise NotFoundError("registered model 'm' not found")

    backend.on_read = gone
    with pytest.raises(NotFoundError):
        make(backend).acquire()
    assert backend.mine() == []


def test_a_claim_that_cannot_be_deleted_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    backend = FakeBackend()
    lock = make(backend)
    lock.acquire()
    [claim] = backend.mine()
    backend.fail_delete = True
    with caplog.at_level(logging.WARNING, logger=lock_module.__name__):
        lock.release()
    assert lock.held is False
    assert caplog.messages == [
        f"could not delete lock claim {claim.key} of model 'm' (it expires by itself): registry down"
    ]


def test_claims_encode_their_fields_and_malformed_tags_are_not_claims() -> None:
    claim = Claim("t1", "h" * 300, 1.5, 61.5)
    assert claim.key == "hybridml.lock.t1"
    assert claim.rank == (1.5, "t1")
    assert json.loads(claim.encode()) == {"holder": "h" * 200, "since": 1.5, "expires": 61.5}
    good = json.dumps({"holder": "x", "since": 1, "expires": 2})
    assert Claim.decode("hybridml.lock.t", good) == Claim("t", "x", 1.0, 2.0)
    for key, value in [
        ("other.t", good),
        ("hybridml.lock.t", "{"),
        ("hybridml.lock.t", json.dumps({"holder": "x", "since": 1})),
        ("hybridml.lock.t", json.dumps({"holder": "x", "since": "soon", "expires": 2})),
        ("hybridml.lock.t", json.dumps({"holder": "x", "since": None, "expires": 2})),
        ("hybridml.lock.t", "[1, 2]"),
    ]:
        assert Claim.decode(key, value) is None


def test_an_expired_claim_seen_after_ours_is_deleted_and_ours_kept() -> None:
    backend = FakeBackend()

    def crashed_writer(b: FakeBackend) -> None:
        if b.reads == 2:
            b.put("dead", "ghost", since=b.now - 100.0, expires=b.now - 40.0)

    backend.on_read = crashed_writer
    make(backend).acquire()
    assert [c.holder for c in claims_of(backend.tags)] == ["me"]


def test_giving_up_while_our_claim_waits_names_the_younger_holder() -> None:
    backend = FakeBackend()

    def younger_that_stays(b: FakeBackend) -> None:
        if b.reads == 2:
            b.put("zzzz", "carol", since=b.now + 1.0, expires=b.now + 1000.0)

    backend.on_read = younger_that_stays
    with pytest.raises(ConflictError, match=r"^model 'm' is being changed by carol "):
        make(backend, lease_s=100.0, wait_s=0.2).acquire()
    assert backend.mine() == []


def test_half_the_lease_is_measured_from_our_claim_and_is_a_strict_bound() -> None:
    backend = FakeBackend()

    def younger_that_stays(b: FakeBackend) -> None:
        if b.reads == 2:
            b.put("zzzz", "carol", since=b.now + 1.0, expires=b.now + 1000.0)

    elapsed = 0.0
    for pause in (0.01, 0.02, 0.04, 0.08, 0.16):
        elapsed += pause  # as the fake clock adds them up
    backend.on_read = younger_that_stays
    with pytest.raises(ConflictError):
        make(backend, lease_s=2 * elapsed, wait_s=1.0).acquire()
    # Exactly half the lease after five pauses is not yet more than half: the claim is withdrawn after the sixth.
    busy = backend.times[names(backend).index("lock-busy")]
    assert busy == elapsed + 0.32


def test_a_pause_ending_exactly_at_the_deadline_is_still_taken() -> None:
    backend = FakeBackend()
    backend.put("aaaa", "bob", since=0.0, expires=1000.0)
    elapsed = 0.0
    for pause in (0.01, 0.02, 0.04, 0.08, 0.16, 0.32):
        elapsed += pause
    with pytest.raises(ConflictError):
        make(backend, wait_s=elapsed + 0.5).acquire()
    assert backend.sleeps == [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.5]
