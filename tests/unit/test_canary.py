"""Canary analysis: checks, decision table, router metrics, fail-closed behaviour (hybridml.monitoring.canary)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from hybridml.deploy.contract import Deployment
from hybridml.errors import ConflictError, InvalidInputError, NotReadyError
from hybridml.monitoring.canary import (
    AUC,
    CONTINUE,
    DRIFT,
    ERROR_RATE,
    FAIL,
    LATENCY,
    PASS,
    PROMOTE,
    ROLLBACK,
    SKIP,
    WAIT,
    CanaryAnalysis,
    CanaryPolicy,
    Check,
    Decision,
    Figures,
    RouterSnapshot,
    check_auc,
    check_drift,
    check_error_rate,
    check_latency,
    decide,
    evaluate,
    histogram_quantile,
    scrape,
)
from hybridml.monitoring.feedback_join import OnlineQuality
from hybridml.registry.protocol import HistoryEvent
from hybridml.serving.metrics import LATENCY_BUCKETS

POLICY = CanaryPolicy(min_requests=50, min_labels=50, min_class_labels=10, max_windows=3)


def quality(auc: float, se: float, n: int = 200, positives: int = 100) -> OnlineQuality:
    return OnlineQuality(auc, auc - 1.96 * se, auc + 1.96 * se, n, positives, n - positives, se=se)


# ------------------------------------------------------------------------------------------------ error rate


def test_error_rate_waits_below_the_minimum_and_judges_at_exactly_the_minimum() -> None:
    below = check_error_rate((0, 50), (0, 49), POLICY)
    assert (below.verdict, below.reason) == (WAIT, "canary has 49 of 50 requests")
    both = check_error_rate((0, 10), (0, 49), POLICY)
    assert both.reason == "stable has 10 of 50 requests; canary has 49 of 50 requests"
    exact = check_error_rate((0, 50), (0, 50), POLICY)
    assert exact.verdict == PASS
    assert exact.figures == {"stable": [0, 50], "canary": [0, 50], "p": 1.0}


def test_error_rate_fails_a_canary_significantly_worse_beyond_the_tolerance() -> None:
    failing = check_error_rate((0, 100), (10, 100), POLICY)
    assert failing.verdict == FAIL
    assert failing.reason.startswith("canary 10.00% vs stable 0.00% 5xx (p=")
    assert failing.figures["p"] < 0.05
    # Significant but within the 1-point tolerance: passes.
    tolerated = check_error_rate((0, 20_000), (150, 20_000), POLICY)
    assert tolerated.figures["p"] < 0.05 and tolerated.verdict == PASS
    # Worse by more than the tolerance but not significant at this size: passes too.
    noisy = check_error_rate((1, 50), (3, 50), POLICY)
    assert noisy.verdict == PASS and noisy.figures["p"] > 0.05


def test_error_rate_without_metrics_waits_and_a_dead_canary_fails() -> None:
    assert check_error_rate(None, (0, 100), POLICY).verdict == WAIT
    died = check_error_rate((0, 100), (0, 100), POLICY, canary_died=True)
    assert (died.verdict, died.figures) == (FAIL, {"died": True})


# --------------------------------------------------------------------------------------------------- latency


def buckets(latencies: list[float]) -> list[tuple[float, float]]:
    bounds = [*LATENCY_BUCKETS, math.inf]
    return [(le, float(sum(v <= le for v in latencies))) for le in bounds]


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    # 100 requests: 90 in (0, 0.01], 10 in (0.01, 0.025]: p99 = 0.01 + 0.015 * (99 - 90) / 10.
    series = [(0.01, 90.0), (0.025, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(0.99, series) == pytest.approx(0.01 + 0.015 * 0.9)
    assert histogram_quantile(0.5, series) == pytest.approx(0.01 * 50 / 90)
    # Beyond the last finite bound: that bound.
    assert histogram_quantile(0.99, [(1.0, 10.0), (math.inf, 100.0)]) == 1.0
    assert histogram_quantile(0.99, [(1.0, 0.0), (math.inf, 0.0)]) is None
    assert histogram_quantile(0.99, []) is None


def test_latency_passes_similar_variants_and_waits_below_the_minimum() -> None:
    fast = buckets([0.003] * 60)
    assert check_latency(fast, buckets([0.003] * 49), POLICY).verdict == WAIT
    same = check_latency(fast, buckets([0.004] * 50), POLICY)
    assert same.verdict == PASS
    assert same.figures["n"] == [60, 50]
    assert check_latency(None, fast, POLICY).verdict == WAIT


def test_latency_fails_a_slow_canary_only_beyond_ratio_and_slack() -> None:
    stable = buckets([0.003] * 200)
    slow = check_latency(stable, buckets([0.003] * 150 + [0.2] * 50), POLICY)
    assert slow.verdict == FAIL
    assert slow.figures["canary"] > 0.1 and slow.figures["p"] < 0.05
    # Twice as slow but only by 3 ms: under the 25 ms slack, it passes.
    twice = check_latency(stable, buckets([0.003] * 150 + [0.008] * 50), POLICY)
    assert twice.verdict == PASS
    strict = check_latency(stable, buckets([0.003] * 150 + [0.008] * 50), CanaryPolicy(latency_slack_s=0.0))
    assert strict.verdict == FAIL


# ------------------------------------------------------------------------------------------------------- AUC


def test_auc_passes_a_better_canary_fails_a_worse_one_and_waits_when_close() -> None:
    better = check_auc(quality(0.80, 0.02), quality(0.95, 0.01), POLICY)
    assert better.verdict == PASS
    assert better.figures["diff"] == pytest.approx(0.15) and better.figures["p_ok"] < 0.05
    worse = check_auc(quality(0.95, 0.01), quality(0.80, 0.02), POLICY)
    assert worse.verdict == FAIL and "significantly worse" in worse.reason
    close = check_auc(quality(0.90, 0.03), quality(0.89, 0.03), POLICY)
    assert close.verdict == WAIT
    assert close.figures["needed"] > 0
    assert "more labels per variant" in close.reason


def test_auc_waits_for_the_minimum_labels_and_both_classes() -> None:
    exact = check_auc(quality(0.8, 0.02, n=50, positives=10), quality(0.95, 0.01, n=50, positives=40), POLICY)
    assert exact.verdict == PASS
    short = check_auc(quality(0.8, 0.02, n=49, positives=20), quality(0.95, 0.01), POLICY)
    assert (short.verdict, short.reason) == (WAIT, "stable has 49 of 50 labels")
    lopsided = check_auc(quality(0.8, 0.02), quality(0.95, 0.01, n=200, positives=9), POLICY)
    assert lopsided.verdict == WAIT
    assert lopsided.reason == "canary has 9 positive and 191 negative labels (needs 10 of each)"
    missing = check_auc(None, quality(0.9, 0.01), POLICY)
    assert (missing.verdict, missing.reason) == (WAIT, "no logged predictions for stable")
    no_auc = OnlineQuality(None, None, None, 100, 100, 0)
    assert check_auc(quality(0.8, 0.02), no_auc, POLICY).verdict == WAIT


def test_drift_signal() -> None:
    assert check_drift(None).verdict == SKIP
    assert check_drift(True, 0.001) == Check(
        DRIFT, FAIL, "the canary's inputs or predictions drifted from its reference profile", {"p": 0.001}
    )
    assert check_drift(False).verdict == PASS


# ------------------------------------------------------------------------------------------- decision table


def c(name: str, verdict: str) -> Check:
    return Check(name, verdict, f"{name} {verdict}")


@pytest.mark.parametrize(
    ("verdicts", "window", "action"),
    [
        ((PASS, PASS, PASS, SKIP), 1, PROMOTE),
        ((PASS, PASS, PASS, PASS), 1, PROMOTE),
        ((PASS, PASS, PASS, FAIL), 1, ROLLBACK),
        ((FAIL, PASS, PASS, SKIP), 1, ROLLBACK),
        ((PASS, FAIL, PASS, SKIP), 1, ROLLBACK),
        ((PASS, PASS, FAIL, SKIP), 1, ROLLBACK),
        ((FAIL, WAIT, WAIT, SKIP), 1, ROLLBACK),
        ((PASS, PASS, WAIT, SKIP), 1, CONTINUE),
        ((WAIT, PASS, PASS, SKIP), 2, CONTINUE),
        ((WAIT, WAIT, WAIT, SKIP), 2, CONTINUE),
        ((PASS, PASS, WAIT, SKIP), 3, ROLLBACK),  # the last window: fails closed
        ((PASS, PASS, PASS, SKIP), 3, PROMOTE),
        ((WAIT, WAIT, WAIT, PASS), 5, ROLLBACK),
    ],
)
def test_decision_table(verdicts: tuple[str, ...], window: int, action: str) -> None:
    checks = [c(name, v) for name, v in zip((ERROR_RATE, LATENCY, AUC, DRIFT), verdicts, strict=True)]
    decision = decide(checks, window, POLICY)
    assert decision.action == action
    assert decision.window == window
    if action == ROLLBACK and FAIL in verdicts:
        assert decision.reasons == tuple(f"{ch.name}: {ch.reason}" for ch in checks if ch.verdict == FAIL)
    elif action == ROLLBACK:
        assert decision.reasons[0] == f"no decision after {window} of 3 windows (fails closed)"
    elif action == CONTINUE:
        assert decision.reasons == tuple(f"{ch.name}: {ch.reason}" for ch in checks[:3] if ch.verdict == WAIT)


def test_a_required_check_that_did_not_run_never_promotes() -> None:
    decision = decide([c(ERROR_RATE, PASS), c(LATENCY, PASS)], 1, POLICY)
    assert (decision.action, decision.reasons) == (CONTINUE, ("a required check was not run",))
    http_only = CanaryPolicy(required=(ERROR_RATE, LATENCY))
    assert decide([c(ERROR_RATE, PASS), c(LATENCY, PASS)], 1, http_only).action == PROMOTE


def test_policy_refuses_bad_values() -> None:
    for bad in ({"alpha": 0}, {"min_labels": 0}, {"max_windows": 0}, {"latency_ratio": 0.5}, {"required": ("x",)}):
        with pytest.raises(InvalidInputError):
            CanaryPolicy(**bad)  # type: ignore[arg-type]


def test_missing_figures_never_promote() -> None:
    # No metrics (server unreachable) and no labels: every window continues, the last one rolls back.
    figures = Figures("1", "2", None, "URLError: refused", None, None)
    decisions = [evaluate(figures, w, POLICY) for w in (1, 2, 3)]
    assert [d.action for d in decisions] == [CONTINUE, CONTINUE, ROLLBACK]
    assert decisions[0].reasons[0] == f"{ERROR_RATE}: no request metrics from the server: URLError: refused"
    # Even with perfect labels, missing HTTP figures never promote.
    labelled = Figures("1", "2", None, "", quality(0.8, 0.02), quality(0.99, 0.005))
    assert evaluate(labelled, 1, POLICY).action == CONTINUE


def test_reason_json_stays_within_the_registry_limit() -> None:
    long = tuple("x" * 400 for _ in range(10))
    checks = tuple(Check(n, WAIT, "r", {"stable": [0.81234, 0.7, 0.9, 100]}) for n in (ERROR_RATE, LATENCY, AUC))
    decision = Decision(CONTINUE, 2, long, checks, "1", "2")
    text = decision.reason_json()
    assert len(text) <= 1000
    parsed = json.loads(text)
    assert parsed["window"] == 2 and parsed["stable"] == "1"
    assert parsed["checks"][AUC] == {"v": WAIT, "stable": [0.81234, 0.7, 0.9, 100]}
    assert all(len(r) == 160 for r in parsed["why"])
    assert len(json.loads(Decision(CONTINUE, 1, ("short",), checks).reason_json())["why"]) == 1


# --------------------------------------------------------------------------------------------- router metrics


def router_text(stable: tuple[int, int], canary: tuple[int, int], *, died: int = 0, latency: float = 0.003) -> str:
    """A /metrics text as the router writes it: (2xx, 5xx) per variant, all at one latency."""
    registry = CollectorRegistry()
    requests = Counter("hybridml_router_requests", "", ["model", "version", "variant", "code"], registry=registry)
    seconds = Histogram("hybridml_router_seconds", "", ["model", "variant"], buckets=LATENCY_BUCKETS,
                        registry=registry)  # fmt: skip
    events = Counter("hybridml_variant_events", "", ["model", "variant", "event"], registry=registry)
    for variant, version, (ok, bad) in (("stable", "1", stable), ("canary", "2", canary)):
        requests.labels("m", version, variant, "200").inc(ok)
        requests.labels("m", version, variant, "500").inc(bad)
        for _ in range(ok + bad):
            seconds.labels("m", variant).observe(latency)
    requests.labels("other", "1", "stable", "500").inc(99)  # another model's series are ignored
    if died:
        events.labels("m", "canary", "died").inc(died)
    return generate_latest(registry).decode()


def test_router_snapshot_parse_and_window() -> None:
    first = RouterSnapshot.parse(router_text((100, 0), (40, 10)), "m")
    assert first.outcome("1", "stable") == (0, 100)
    assert first.outcome("2", "canary") == (10, 50)
    assert first.outcome("9", "canary") == (0, 0)
    latency = first.latency("canary")
    assert latency is not None and latency[-1] == (math.inf, 50.0)
    second = RouterSnapshot.parse(router_text((300, 0), (90, 10), died=1), "m")
    window = second.since(first)
    assert window.outcome("1", "stable") == (0, 200)
    assert window.outcome("2", "canary") == (0, 50)
    assert window.died == {"canary": 1.0}
    # A restarted server (counters went down): the later counts are the window.
    assert first.since(second).outcome("1", "stable") == (0, 100)
    assert first.since(None) is first
    assert RouterSnapshot.parse("", "m").latency("stable") is None


# -------------------------------------------------------------------------------------------- the analysis


@dataclass
class FakeTarget:
    """A deploy target with one canary deployment; counts promote/rollback calls."""

    canary: str | None = "2"
    calls: list[str] = field(default_factory=list)
    fail_with: Exception | None = None

    def status(self, name: str) -> Deployment:
        return Deployment(name, "fake", "http://127.0.0.1:1", "1", self.canary, 50 if self.canary else 0, True, "")

    def promote(self, name: str) -> Deployment:
        return self._act("promote", name)

    def rollback(self, name: str) -> Deployment:
        return self._act("rollback", name)

    def _act(self, action: str, name: str) -> Deployment:
        if self.fail_with is not None:
            raise self.fail_with
        self.calls.append(action)
        self.canary = None
        return self.status(name)


@dataclass
class FakeRegistry:
    events: list[HistoryEvent] = field(default_factory=list)

    def record_event(self, name: str, version: int | str, action: str, detail: str, *, reason: str = "") -> Any:
        event = HistoryEvent(f"2026-01-01T00:00:{len(self.events):02d}", "t", action, name, int(version), detail,
                             reason)  # fmt: skip
        self.events.append(event)
        return event

    def history(self, name: str, version: int | None = None) -> list[HistoryEvent]:
        return [e for e in self.events if version is None or e.version == version]


def write_logs(tmp_path: Path, stable_auc_good: bool, n: int = 120) -> tuple[Path, Path]:
    """Payload and feedback logs where stable and canary each score n labelled one-row requests."""
    payload, feedback = [], []
    for i in range(n):
        y = i % 2
        good, bad = (0.8 if y else 0.2), (0.6 if (y if i % 3 else 1 - y) else 0.4)
        for variant, version, score in (("stable", "1", good if stable_auc_good else bad),
                                        ("canary", "2", bad if stable_auc_good else good)):  # fmt: skip
            rid = f"{variant}-{i}"
            payload.append({"record_version": 2, "ts": 100.0 + i, "request_id": rid, "model": "m",
                            "version": version, "variant": variant, "outputs": [score]})  # fmt: skip
            feedback.append({"ts": 150.0 + i, "request_id": rid, "label": y, "model": "m"})
    payload_path, feedback_path = tmp_path / "payload.jsonl", tmp_path / "feedback.jsonl"
    payload_path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in payload))
    feedback_path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in feedback))
    return payload_path, feedback_path


def analysis(tmp_path: Path, *, metrics: str | None, stable_good: bool = False, **kwargs: Any) -> CanaryAnalysis:
    payload, feedback = write_logs(tmp_path, stable_good)

    def fetch(endpoint: str) -> str:
        if metrics is None:
            raise OSError("connection refused")
        return metrics

    return CanaryAnalysis(FakeTarget(), FakeRegistry(), "m", payload_log=payload, feedback_log=feedback,
                          policy=POLICY, fetch_metrics=fetch, sleep=lambda s: None, **kwargs)  # fmt: skip


def test_analysis_promotes_a_better_canary_and_records_the_figures(tmp_path: Path) -> None:
    run = analysis(tmp_path, metrics=router_text((100, 0), (100, 0)))
    decision, _ = run.analyze()
    assert decision.action == PROMOTE, decision.reasons
    assert (decision.stable_version, decision.canary_version, decision.window) == ("1", "2", 1)
    applied = run.apply(decision)
    assert applied.applied and run.target.calls == ["promote"]
    (event,) = run.registry.events
    assert (event.action, event.version, event.detail) == ("canary", 2, "promote")
    figures = json.loads(event.reason)
    assert figures["checks"][ERROR_RATE] == {"v": PASS, "stable": [0, 100], "canary": [0, 100], "p": 1.0}
    assert figures["checks"][AUC]["v"] == PASS
    assert figures["checks"][AUC]["canary"][0] > figures["checks"][AUC]["stable"][0]
    assert figures["checks"][DRIFT] == {"v": SKIP}


def test_analysis_rolls_back_a_worse_canary(tmp_path: Path) -> None:
    run = analysis(tmp_path, metrics=router_text((100, 0), (100, 0)), stable_good=True)
    decision = run.apply(run.analyze()[0])
    assert decision.action == ROLLBACK and run.target.calls == ["rollback"]
    assert decision.reasons[0].startswith(f"{AUC}: AUC canary ")


def test_analysis_rolls_back_a_canary_answering_5xx(tmp_path: Path) -> None:
    run = analysis(tmp_path, metrics=router_text((100, 0), (0, 60)))
    assert run.analyze()[0].action == ROLLBACK


def test_a_drifted_canary_is_rolled_back(tmp_path: Path) -> None:
    run = analysis(tmp_path, metrics=router_text((100, 0), (100, 0)), drifted=True, drift_pvalue=0.0001)
    decision = run.analyze()[0]
    assert decision.action == ROLLBACK
    assert decision.to_dict()["checks"][DRIFT]["verdict"] == FAIL


def test_an_unreachable_server_never_promotes_and_rolls_back_at_the_last_window(tmp_path: Path) -> None:
    run = analysis(tmp_path, metrics=None)
    decisions = run.watch(interval_s=1.0)
    assert [d.action for d in decisions] == [CONTINUE, CONTINUE, ROLLBACK]
    assert [d.window for d in decisions] == [1, 2, 3]
    assert run.target.calls == ["rollback"]
    assert [e.detail for e in run.registry.events] == [CONTINUE, CONTINUE, ROLLBACK]
    assert "connection refused" in decisions[0].reasons[0]
    assert decisions[-1].reasons[0] == "no decision after 3 of 3 windows (fails closed)"


def test_repeated_analyze_counts_windows_from_the_history(tmp_path: Path) -> None:
    run = analysis(tmp_path, metrics=None)
    actions = [run.apply(run.analyze()[0]).action for _ in range(3)]
    assert actions == [CONTINUE, CONTINUE, ROLLBACK]
    assert run.prior_windows("2") == 0  # the rollback ended that trial
    assert run.prior_windows("other-2") == 0


def test_without_logs_or_labels_the_auc_waits(tmp_path: Path) -> None:
    run = analysis(tmp_path, metrics=router_text((100, 0), (100, 0)))
    run.feedback_log = None
    decision = run.analyze()[0]
    assert decision.action == CONTINUE
    assert decision.reasons == (f"{AUC}: no logged predictions for stable and canary",)
    run.feedback_log = tmp_path / "empty.jsonl"
    run.feedback_log.write_text("")
    assert run.analyze()[0].reasons == (f"{AUC}: stable has 0 of 50 labels; canary has 0 of 50 labels",)


def test_a_window_uses_two_scrapes(tmp_path: Path) -> None:
    texts = iter([router_text((100, 0), (100, 0)), router_text((130, 0), (120, 0))])
    run = analysis(tmp_path, metrics="")
    run._fetch_metrics = lambda endpoint: next(texts)
    decision, end = run.analyze(window_s=30)
    assert end is not None and end.outcome("1", "stable") == (0, 130)
    # 30 stable and 20 canary requests in the window: below the minimum of 50.
    assert decision.to_dict()["checks"][ERROR_RATE]["reason"] == (
        "stable has 30 of 50 requests; canary has 20 of 50 requests"
    )


def test_a_failed_action_is_recorded_and_raised(tmp_path: Path) -> None:
    run = analysis(tmp_path, metrics=router_text((100, 0), (100, 0)))
    run.target.fail_with = NotReadyError("control listener down")
    with pytest.raises(NotReadyError):
        run.apply(run.analyze()[0])
    (event,) = run.registry.events
    assert event.detail == "promote failed"
    assert json.loads(event.reason)["error"] == "control listener down"


def test_no_canary_is_a_conflict(tmp_path: Path) -> None:
    run = analysis(tmp_path, metrics="")
    run.target.canary = None
    with pytest.raises(ConflictError, match="no canary"):
        run.analyze()
    with pytest.raises(InvalidInputError, match="interval"):
        run.watch(0)


def test_a_new_trial_ignores_the_requests_of_the_versions_earlier_trial(tmp_path: Path) -> None:
    run = analysis(tmp_path, metrics=router_text((100, 0), (100, 0)))
    assert run.analyze()[0].action == PROMOTE  # the logged requests (ts 100-220) judge this trial
    # The version's earlier trial ended (rollback) after those requests: a redeployed canary starts afresh.
    run.registry.record_event("m", "2", "canary", ROLLBACK)
    run.registry.events[-1] = HistoryEvent("1970-01-01T00:05:00Z", "t", "canary", "m", 2, ROLLBACK, "")
    assert run.trial("2") == (0, 300.0)
    decision = run.analyze()[0]
    assert decision.action == CONTINUE
    assert decision.reasons == (f"{AUC}: no logged predictions for stable and canary",)
    run.registry.events[-1] = HistoryEvent("1970-01-01T00:01:50Z", "t", "canary", "m", 2, ROLLBACK, "")
    q = run.analyze()[0].to_dict()["checks"][AUC]
    assert q["canary"][3] == 120 - 11  # requests at ts 111 and later


def test_scrape_refuses_anything_but_http_before_opening_it(tmp_path: Path) -> None:
    secret = tmp_path / "metrics"
    secret.write_text("hybridml_router_requests_total 1\n")
    for endpoint in (f"file://{tmp_path}", "ftp://127.0.0.1", "127.0.0.1:8080"):
        with pytest.raises(InvalidInputError, match="endpoint must be an http:// or https:// URL"):
            scrape(endpoint)
