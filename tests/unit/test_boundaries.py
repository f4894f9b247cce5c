"""Boundaries and every field: the approval gate at its exact edges, the champion rule, the wait budget that is
not a multiple of the poll interval, the sticky canary share over many keys, and the payload record v2."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridml.core.approval import (
    APPROVED,
    CHAMPION,
    PENDING,
    REJECTED,
    STATUSES,
    TRANSITIONS,
    Change,
    Decision,
    auto_decision,
    check_alias,
    check_approved,
    check_status,
    check_threshold,
    decide,
    plan,
)
from hybridml.errors import ConflictError, InvalidInputError, NotReadyError
from hybridml.serving.payload_log import (
    MAX_REQUEST_ID_CHARS,
    RECORD_VERSION,
    JsonLinesLog,
    check_request_id,
    payload_record,
    read_records,
)
from hybridml.serving.router import CANARY, STABLE, RouterApp, Worker, bucket
from tests.contract.harness import FakeClock, ScriptedTarget

pytestmark = pytest.mark.unit

DOWN = -math.inf
UNIT = st.floats(0.0, 1.0)

# ---------------------------------------------------------------------------------------------- approval gate


def approved_reason(roc: float, threshold: float, champion: float | None) -> str:
    against = f"; champion has {champion:.4f}" if champion is not None else "; no champion yet"
    return f"ROC AUC {roc:.4f} >= threshold {threshold:.4f}{against}"


def pending_reason(roc: float, threshold: float) -> str:
    return f"ROC AUC {roc:.4f} is below the threshold {threshold:.4f}; needs manual approval"


@settings(max_examples=50, deadline=None)
@given(threshold=UNIT, tolerance=UNIT)
def test_a_score_exactly_at_the_threshold_is_approved_one_ulp_below_stays_pending(
    threshold: float, tolerance: float
) -> None:
    assert decide(threshold, threshold, None, tolerance) == Decision(
        APPROVED, approved_reason(threshold, threshold, None)
    )
    below = math.nextafter(threshold, DOWN)
    assert decide(below, threshold, None, tolerance) == Decision(PENDING, pending_reason(below, threshold))
    # A champion far below changes nothing at the gate.
    assert decide(below, threshold, 0.0, tolerance).status == PENDING
    assert decide(threshold, threshold, 0.0, tolerance) == Decision(
        APPROVED, approved_reason(threshold, threshold, 0.0)
    )


@settings(max_examples=50, deadline=None)
@given(champion=st.floats(0.1, 1.0), tolerance=st.floats(0.0, 0.05))
def test_champion_tolerance_exactly_at_the_edge(champion: float, tolerance: float) -> None:
    edge = champion - tolerance  # exactly "tolerance worse than the champion": still approved
    assert decide(edge, 0.0, champion, tolerance) == Decision(APPROVED, approved_reason(edge, 0.0, champion))
    worse = math.nextafter(edge, DOWN)
    assert decide(worse, 0.0, champion, tolerance) == Decision(
        REJECTED,
        f"ROC AUC {worse:.4f} is worse than the champion's {champion:.4f} by more than {tolerance:.4f}",
    )
    # Better than the champion is approved too; the threshold is checked before the champion.
    assert decide(champion, 0.0, champion, tolerance).status == APPROVED
    assert decide(worse, math.nextafter(worse, math.inf), champion, tolerance).status == PENDING


@pytest.mark.parametrize("champion", [None, 0.9])
def test_a_nan_score_is_never_approved(champion: float | None) -> None:
    try:
        decision = auto_decision(PENDING, math.nan, 0.8, champion, 0.01)
    except InvalidInputError:
        return  # refusing to decide is fine too
    assert decision is None or decision.status != APPROVED


def test_worked_decisions_every_field() -> None:
    assert decide(0.85, 0.8, 0.9, 0.02) == Decision(
        REJECTED, "ROC AUC 0.8500 is worse than the champion's 0.9000 by more than 0.0200"
    )
    assert decide(0.89, 0.8, 0.9, 0.02) == Decision(APPROVED, "ROC AUC 0.8900 >= threshold 0.8000; champion has 0.9000")
    assert decide(0.7, 0.8, 0.9, 0.02) == Decision(
        PENDING, "ROC AUC 0.7000 is below the threshold 0.8000; needs manual approval"
    )


@pytest.mark.parametrize("value", [0.0, 1.0, 0.5])
def test_thresholds_at_the_ends_are_accepted(value: float) -> None:
    assert check_threshold("threshold", value) == value
    assert decide(1.0, value, None, value).status == APPROVED


@pytest.mark.parametrize("value", [math.nextafter(0.0, DOWN), math.nextafter(1.0, math.inf), math.nan, -1.0, 2.0])
def test_thresholds_one_ulp_outside_are_refused(value: float) -> None:
    with pytest.raises(InvalidInputError, match=rf"^min_auc must be between 0 and 1, got {re.escape(str(value))}$"):
        check_threshold("min_auc", value)
    with pytest.raises(InvalidInputError, match=r"^threshold must be between 0 and 1"):
        decide(0.9, value, None, 0.0)
    with pytest.raises(InvalidInputError, match=r"^tolerance must be between 0 and 1"):
        decide(0.9, 0.5, None, value)


def test_auto_decision_decides_only_pending_versions() -> None:
    for status in (APPROVED, REJECTED):
        assert auto_decision(status, 0.99, 0.5, None, 0.0) is None
        assert auto_decision(status, None, 0.5, None, 0.0) is None  # no roc_auc needed to leave it alone
    with pytest.raises(InvalidInputError, match="no roc_auc tag"):
        auto_decision(PENDING, None, 0.5, None, 0.0)
    below = math.nextafter(0.5, DOWN)
    assert auto_decision(PENDING, below, 0.5, None, 0.0) is None  # staying pending changes nothing
    assert auto_decision(PENDING, 0.5, 0.5, None, 0.0) == Decision(APPROVED, approved_reason(0.5, 0.5, None))
    assert auto_decision(PENDING, 0.6, 0.5, 0.7, 0.05) == Decision(
        REJECTED, "ROC AUC 0.6000 is worse than the champion's 0.7000 by more than 0.0500"
    )
    with pytest.raises(InvalidInputError, match="threshold"):
        auto_decision(PENDING, 0.9, 1.5, None, 0.0)


# ------------------------------------------------------------------------------------------- champion rule


def test_transitions_table() -> None:
    assert STATUSES == (PENDING, APPROVED, REJECTED) == ("PendingManualApproval", "Approved", "Rejected")
    both = frozenset({APPROVED, REJECTED})
    assert dict(TRANSITIONS) == {PENDING: both, APPROVED: both, REJECTED: both}


@pytest.mark.parametrize("before", STATUSES)
@pytest.mark.parametrize("after", STATUSES)
@pytest.mark.parametrize("champion", [None, 7, 3])
def test_plan_every_transition_every_field(before: str, after: str, champion: int | None) -> None:
    version = 7
    if after == PENDING:
        with pytest.raises(ConflictError) as caught:
            plan(version, before, after, champion)
        assert str(caught.value) == (
            f"version 7 is {before}; it cannot become {PENDING} "
            "(a decision is revised by approving or rejecting again, not undone)"
        )
        return
    change = plan(version, before, after, champion)
    expected_after = version if after == APPROVED else (None if champion == version else champion)
    assert change == Change(version, before, after, champion, expected_after)
    assert (change.version, change.status_before, change.status_after) == (7, before, after)
    assert (change.champion_before, change.champion_after) == (champion, expected_after)
    assert change.moves_champion is (champion != expected_after)
    assert change.removes_champion is (champion is not None and expected_after is None)


def test_plan_refusals() -> None:
    with pytest.raises(InvalidInputError, match=r"^unknown approval status 'Archived' \(choose from "
                       r"PendingManualApproval, Approved, Rejected\)$"):  # fmt: skip
        plan(1, PENDING, "Archived", None)
    with pytest.raises(ConflictError, match=r"^version 1 is Archived; it cannot become Approved"):
        plan(1, "Archived", APPROVED, None)
    for status in STATUSES:
        assert check_status(status) == status
    with pytest.raises(InvalidInputError):
        check_status("approved")  # case matters: SageMaker's spelling


def test_champion_alias_only_on_approved() -> None:
    check_alias(CHAMPION, 1, APPROVED)
    for status in (PENDING, REJECTED):
        with pytest.raises(
            ConflictError, match=f"^version 4 is {status}; only an Approved version can be the champion$"
        ):
            check_alias(CHAMPION, 4, status)
        check_alias("challenger", 4, status)  # other aliases are free


def test_only_approved_versions_leave_the_registry_for_a_target() -> None:
    check_approved("churn", 3, APPROVED)
    for status in (PENDING, REJECTED, "approved"):  # the status is compared exactly, case included
        with pytest.raises(ConflictError, match=f"^churn version 3 is {status}, only Approved versions are deployed$"):
            check_approved("churn", 3, status)
    with pytest.raises(ConflictError, match=r"^churn version 3 is Rejected, only Approved versions go to SageMaker$"):
        check_approved("churn", "3", REJECTED, "go to SageMaker")


# ------------------------------------------------------------------------------------- wait_until_ready budget


def test_budget_not_a_multiple_of_the_poll_interval_cuts_the_last_sleep() -> None:
    clock = FakeClock()
    target = ScriptedTarget(clock)
    # Pauses 0.125, 0.25, 0.5, 0.5, ... (dyadic, so the sums are exact): 1.625 s is 0.125 + 0.25 + 0.5 + 0.5 + 0.25.
    with pytest.raises(NotReadyError) as caught:
        target.wait_until_ready("m", timeout_s=1.625, first_poll_s=0.125, max_poll_s=0.5)
    assert clock.sleeps == [0.125, 0.25, 0.5, 0.5, 0.25]
    assert sum(clock.sleeps) == 1.625 == clock.now
    assert target.polled_at == [0.0, 0.125, 0.375, 0.875, 1.375, 1.625]  # a final poll exactly at the deadline
    assert str(caught.value) == "deployment 'm' not ready after 1.625s (last status: poll 6)"


def test_a_sliver_of_budget_left_after_a_slow_poll_is_still_waited_for() -> None:
    clock = FakeClock()
    poll = 1 / 256
    target = ScriptedTarget(clock, poll_cost_s=poll)
    with pytest.raises(NotReadyError):
        target.wait_until_ready("m", timeout_s=poll + 1 / 1024, first_poll_s=0.5, max_poll_s=1.0)
    assert clock.sleeps == [1 / 1024]  # the pause is cut to the 1/1024 s the first poll left
    assert target.polled_at == [0.0, poll + 1 / 1024]  # and the last poll is at the deadline


def test_ready_on_the_final_poll_at_the_deadline_is_ready() -> None:
    clock = FakeClock()
    target = ScriptedTarget(clock, ready_on=6)
    deployment = target.wait_until_ready("m", timeout_s=1.625, first_poll_s=0.125, max_poll_s=0.5)
    assert deployment.ready and deployment.detail == "poll 6"
    assert clock.now == 1.625 and len(target.polled_at) == 6


@settings(max_examples=60, deadline=None)
@given(budget=st.integers(0, 700), first=st.integers(1, 40), cap=st.integers(0, 60))
def test_total_sleep_equals_the_budget_exactly(budget: int, first: int, cap: int) -> None:
    # Multiples of 1/64 s keep float sums exact, so "exactly" can be asserted with ==.
    timeout, first_s, max_s = budget / 64, first / 64, (first + cap) / 64
    clock = FakeClock()
    target = ScriptedTarget(clock)
    with pytest.raises(NotReadyError):
        target.wait_until_ready("m", timeout_s=timeout, first_poll_s=first_s, max_poll_s=max_s)
    assert sum(clock.sleeps) == timeout == clock.now
    assert len(target.polled_at) == len(clock.sleeps) + 1 and target.polled_at[-1] == timeout
    scheduled = [min(first_s * 2**k, max_s) for k in range(len(clock.sleeps))]
    assert clock.sleeps[:-1] == scheduled[:-1]  # every pause but the last is the backoff schedule
    if clock.sleeps:
        assert 0 < clock.sleeps[-1] <= scheduled[-1]


def test_zero_budget_polls_once_and_bad_intervals_are_refused() -> None:
    clock = FakeClock()
    target = ScriptedTarget(clock)
    with pytest.raises(NotReadyError, match=r"not ready after 0s \(last status: poll 1\)"):
        target.wait_until_ready("m", timeout_s=0)
    assert clock.sleeps == [] and target.polled_at == [0.0]
    assert ScriptedTarget(FakeClock(), ready_on=1).wait_until_ready("m", timeout_s=0).ready
    for kwargs in (
        {"timeout_s": -0.001},
        {"timeout_s": math.nan},
        {"timeout_s": 1, "first_poll_s": 0.0},
        {"timeout_s": 1, "first_poll_s": 0.5, "max_poll_s": math.nextafter(0.5, DOWN)},
    ):
        with pytest.raises(InvalidInputError):
            target.wait_until_ready("m", **kwargs)
    # first == max is allowed: a constant interval.
    clock = FakeClock()
    ScriptedTarget(clock, ready_on=3).wait_until_ready("m", timeout_s=5, first_poll_s=0.5, max_poll_s=0.5)
    assert clock.sleeps == [0.5, 0.5]


# ------------------------------------------------------------------------------------------ sticky canary share

KEYS = [f"customer-{i}" for i in range(20_000)]


@pytest.mark.parametrize("percent", [1, 10, 50])
def test_sticky_key_share_is_within_one_point_of_the_canary_percent(percent: int, tmp_path: Path) -> None:
    buckets = [bucket(k) for k in KEYS]
    assert all(0 <= b < 10_000 for b in buckets)
    assert len(set(buckets)) > 8_000  # spread over the range, not a handful of values
    workers = {
        STABLE: Worker(STABLE, "1", tmp_path / "stable.sock"),
        CANARY: Worker(CANARY, "2", tmp_path / "canary.sock"),
    }
    router = RouterApp("m", workers, canary_percent=percent)
    chosen = [router._choose(k) for k in KEYS]
    share = chosen.count(CANARY) / len(KEYS) * 100
    assert abs(share - percent) <= 1.0, share
    # Sticky: the same key always gets the same variant, whatever came between.
    assert [router._choose(k) for k in reversed(KEYS)] == chosen[::-1]
    # Raising the share only moves keys from stable to canary, never back.
    router.canary_percent = min(percent * 2, 100)
    wider = [router._choose(k) for k in KEYS]
    assert all(w == CANARY for w, c in zip(wider, chosen, strict=True) if c == CANARY)


def test_bucket_is_the_same_in_another_process() -> None:
    # Not Python's per-process salted hash(): a router restart must keep each key's variant.
    keys = ["customer-1", "ключ", "", "a" * 300]
    script = "import sys; from hybridml.serving.router import bucket; print([bucket(k) for k in sys.argv[1:]])"
    out = subprocess.run(
        [sys.executable, "-c", script, *keys], check=True, capture_output=True, text=True, env={"PYTHONHASHSEED": "1"}
    ).stdout
    assert out.strip() == str([bucket(k) for k in keys])
    assert [bucket(k) for k in keys] == [bucket(k) for k in keys]


# --------------------------------------------------------------------------------------- payload record, v2

FIELDS = {
    "record_version", "ts", "request_id", "model", "version", "variant", "schema_hash", "inputs",
    "unknown_categories", "outputs",
}  # fmt: skip


def test_payload_record_every_field(tmp_path: Path) -> None:
    inputs = [{"amount": 120.5, "count": 3, "flag": True, "color": "red"},
              {"amount": None, "count": 7, "flag": False, "color": "purple"}]  # fmt: skip
    unknown = [[], ["color"]]
    scores = np.array([0.08819744075943776, 0.9007022973749614])
    schema_hash = "sha256:" + "7e" * 32
    before = time.time()
    record = payload_record("req-1", "loans", "3", "canary", schema_hash, inputs, unknown, scores)
    after = time.time()
    assert set(record) == FIELDS
    assert record["record_version"] == RECORD_VERSION == 2 and type(record["record_version"]) is int
    assert isinstance(record["ts"], float) and before <= record["ts"] <= after
    assert record["request_id"] == "req-1"
    assert record["model"] == "loans"
    assert record["version"] == "3"
    assert record["variant"] == "canary"
    assert record["schema_hash"] == schema_hash
    assert record["inputs"] == inputs
    assert record["unknown_categories"] == unknown
    assert np.asarray(record["outputs"]).tolist() == scores.tolist()
    # Written and read back: the same fields and values, outputs as a JSON list of exactly those numbers.
    log = JsonLinesLog(tmp_path / "payload.jsonl")
    log.write(record)
    log.close()
    (back,) = list(read_records(tmp_path / "payload.jsonl"))
    assert back == {**record, "outputs": scores.tolist()}
    assert (tmp_path / "payload.jsonl").read_bytes().count(b"\n") == 1


def test_payload_record_fields_are_the_documented_ones() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "payload-log.md").read_text()
    section = doc.split("## Fields", 1)[1].split("\n\n", 2)[1]
    documented = re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE)
    record = payload_record("r", "m", "", "stable", "sha256:" + "0" * 64, [], [], np.array([]))
    assert documented == list(record) and set(documented) == FIELDS
    assert f"# Payload log (record version {RECORD_VERSION})" in doc


def test_request_id_length_and_printability_edges() -> None:
    assert check_request_id("r" * MAX_REQUEST_ID_CHARS) == "r" * 128
    assert check_request_id("x") == "x"
    for bad in ("r" * (MAX_REQUEST_ID_CHARS + 1), "", "tab\there", "nl\n", 5, None):
        with pytest.raises(InvalidInputError, match="request_id must be a printable string of 1-128 characters"):
            check_request_id(bad)
