"""Canary analysis: canary against stable on error rate, p99 latency, online AUC and drift; promote, continue, rollback.

The checks and the decision are pure functions over figures (:func:`check_error_rate`, :func:`check_latency`,
:func:`check_auc`, :func:`check_drift`, :func:`decide`); :class:`CanaryAnalysis` gathers the figures (the
router's ``/metrics``, the payload and feedback logs), acts through the deploy contract and writes every
decision into the registry history. The rules are documented in docs/monitoring.md, "Canary analysis".

Fails closed: a check without enough data (no metrics, an unreachable server, too few requests or labels)
waits, and waiting never promotes. After ``max_windows`` windows without a decision the canary is rolled back.
"""

from __future__ import annotations

import json
import math
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from hybridml.core.quality import (
    aucs_sample_size,
    compare_aucs,
    non_inferiority_p,
    still_needed,
    two_proportions,
    unit_variance,
)
from hybridml.errors import ConflictError, InvalidInputError
from hybridml.monitoring.feedback_join import OnlineQuality, first_seen, online_quality

PROMOTE, CONTINUE, ROLLBACK = "promote", "continue", "rollback"
PASS, FAIL, WAIT, SKIP = "pass", "fail", "wait", "skip"
ERROR_RATE, LATENCY, AUC, DRIFT = "error_rate", "latency_p99", "online_auc", "drift"
STABLE, CANARY = "stable", "canary"
MAX_REASON_CHARS = 1000  # what the registry keeps of an event's reason


@dataclass(frozen=True)
class CanaryPolicy:
    """When a canary passes, fails or must wait; the defaults are documented in docs/monitoring.md.

    Attributes:
        alpha: level of every test (one-sided).
        power: power used for the sample size still needed.
        min_requests: requests each variant needs in a window before error rate and latency are judged.
        min_labels: joined labels each variant needs before the AUCs are compared.
        min_class_labels: of which at least this many of each class.
        error_tolerance: how much higher the canary's 5xx rate may be than stable's (absolute) before a
            significant difference fails it.
        latency_ratio: how many times stable's p99 the canary's p99 may be.
        latency_slack_s: and by how many seconds it may exceed stable's p99 whatever the ratio (differences
            below it are scheduling noise, not a regression).
        auc_margin: non-inferiority margin: the canary passes when its AUC is shown to be no more than this
            below stable's.
        max_windows: windows without a decision before the canary is rolled back.
        required: the checks that must pass to promote (drift is judged only when a signal is given).
    """

    alpha: float = 0.05
    power: float = 0.8
    min_requests: int = 50
    min_labels: int = 50
    min_class_labels: int = 10
    error_tolerance: float = 0.01
    latency_ratio: float = 1.5
    latency_slack_s: float = 0.025
    auc_margin: float = 0.02
    max_windows: int = 10
    required: tuple[str, ...] = (ERROR_RATE, LATENCY, AUC)

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1 or not 0 < self.power < 1:
            raise InvalidInputError(f"alpha and power must be in (0, 1), got {self.alpha} and {self.power}")
        if min(self.min_requests, self.min_labels, self.min_class_labels) < 1:
            raise InvalidInputError("minimum sample sizes must be 1 or more")
        if self.max_windows < 1:
            raise InvalidInputError(f"max windows must be 1 or more, got {self.max_windows}")
        if self.error_tolerance < 0 or self.latency_slack_s < 0 or self.auc_margin < 0 or self.latency_ratio < 1:
            raise InvalidInputError("tolerances must be 0 or more and the latency ratio 1 or more")
        unknown = set(self.required) - {ERROR_RATE, LATENCY, AUC, DRIFT}
        if unknown:
            raise InvalidInputError(f"unknown checks {sorted(unknown)} (choose from {ERROR_RATE}, {LATENCY}, {AUC})")


@dataclass(frozen=True)
class Check:
    """The verdict of one check: pass, fail, wait (not enough data) or skip (no input given)."""

    name: str
    verdict: str
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """What the analysis decided in one window, why, and on what figures."""

    action: str
    window: int
    reasons: tuple[str, ...]
    checks: tuple[Check, ...]
    stable_version: str = ""
    canary_version: str = ""
    applied: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The decision as JSON-ready data (what the CLI prints)."""
        return {
            "decision": self.action,
            "window": self.window,
            "stable_version": self.stable_version,
            "canary_version": self.canary_version,
            "applied": self.applied,
            "reasons": list(self.reasons),
            "checks": {c.name: {"verdict": c.verdict, "reason": c.reason, **c.figures} for c in self.checks},
        }

    def reason_json(self, limit: int = MAX_REASON_CHARS) -> str:
        """Compact JSON of the figures for the registry history, at most ``limit`` characters.

        Holds the window, the verdict and figures of each check and the reasons; reasons are shortened,
        then dropped, when the whole would not fit.
        """
        checks = {c.name: {"v": c.verdict, **c.figures} for c in self.checks}
        reasons = [r[:160] for r in self.reasons]
        while True:
            text = json.dumps(
                {"window": self.window, "stable": self.stable_version, "checks": checks, "why": reasons},
                separators=(",", ":"),
                default=str,
            )
            if len(text) <= limit:
                return text
            if reasons:
                reasons = reasons[:-1]
                continue
            return json.dumps({"window": self.window, "checks": {k: v["v"] for k, v in checks.items()}})[:limit]


# ------------------------------------------------------------------------------------------------------ checks


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


def _short_of_requests(counts: Iterable[tuple[str, int]], policy: CanaryPolicy) -> str:
    """Which variants have fewer requests than the minimum, as one line ("" when none)."""
    return "; ".join(f"{v} has {n} of {policy.min_requests} requests" for v, n in counts if n < policy.min_requests)


def check_error_rate(
    stable: tuple[int, int] | None, canary: tuple[int, int] | None, policy: CanaryPolicy, *, canary_died: bool = False
) -> Check:
    """Compare 5xx rates: fail when the canary's is significantly higher by more than the tolerance.

    Args:
        stable: (5xx responses, requests) of stable in the window; None when there are no metrics.
        canary: the same for the canary.
        policy: thresholds.
        canary_died: the router saw the canary's worker die in the window (fails at once).
    """
    if canary_died:
        return Check(ERROR_RATE, FAIL, "the canary's worker died (the router fell back to stable)", {"died": True})
    if stable is None or canary is None:
        return Check(ERROR_RATE, WAIT, "no request metrics from the server")
    figures: dict[str, Any] = {"stable": list(stable), "canary": list(canary)}
    short = _short_of_requests(((STABLE, stable[1]), (CANARY, canary[1])), policy)
    if short:
        return Check(ERROR_RATE, WAIT, short, figures)
    test = two_proportions(stable[0], stable[1], canary[0], canary[1])
    figures["p"] = _round(test.p_b_higher)
    rates = f"canary {test.b:.2%} vs stable {test.a:.2%} 5xx"
    if test.p_b_higher < policy.alpha and test.diff > policy.error_tolerance:
        return Check(ERROR_RATE, FAIL, f"{rates} (p={test.p_b_higher:.3g})", figures)
    return Check(ERROR_RATE, PASS, rates, figures)


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a cumulative histogram, interpolated within its bucket as Prometheus does.

    Args:
        q: quantile in [0, 1].
        buckets: (upper bound, cumulative count) pairs, the last one ``+Inf``.

    Returns:
        The quantile in the buckets' unit; the largest finite bound when it falls in the ``+Inf`` bucket;
        None for an empty histogram.
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank and count > below:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound if math.isfinite(bound) else lower, count
    return lower


def _count_at(buckets: list[tuple[float, float]], bound: float) -> float:
    return next(count for le, count in sorted(buckets) if le >= bound)


def check_latency(
    stable: list[tuple[float, float]] | None, canary: list[tuple[float, float]] | None, policy: CanaryPolicy
) -> Check:
    """Compare p99 latencies from the router's histogram buckets.

    The test: with ``T`` the smallest bucket bound at or above stable's p99, the shares of requests slower than
    ``T`` are compared with a one-sided two-proportion test. The check fails when that share is significantly
    higher for the canary **and** the canary's p99 exceeds stable's by both the ratio and the slack.
    """
    if stable is None or canary is None:
        return Check(LATENCY, WAIT, "no latency metrics from the server")
    n_stable, n_canary = int(max(c for _, c in stable)), int(max(c for _, c in canary))
    figures: dict[str, Any] = {"n": [n_stable, n_canary]}
    short = _short_of_requests(((STABLE, n_stable), (CANARY, n_canary)), policy)
    if short:
        return Check(LATENCY, WAIT, short, figures)
    p99_stable, p99_canary = histogram_quantile(0.99, stable), histogram_quantile(0.99, canary)
    assert p99_stable is not None and p99_canary is not None  # both have requests
    figures.update(stable=_round(p99_stable, 5), canary=_round(p99_canary, 5))
    text = f"p99 canary {p99_canary * 1000:.1f} ms vs stable {p99_stable * 1000:.1f} ms"
    finite = sorted(le for le, _ in stable if math.isfinite(le) and le >= p99_stable)
    if not finite:
        return Check(LATENCY, PASS, f"{text} (stable beyond the last bucket: not comparable)", figures)
    bound = finite[0]
    slow_stable = n_stable - _count_at(stable, bound)
    slow_canary = n_canary - _count_at(canary, bound)
    test = two_proportions(int(slow_stable), n_stable, int(slow_canary), n_canary)
    figures["p"] = _round(test.p_b_higher)
    worse = p99_canary > p99_stable * policy.latency_ratio and p99_canary - p99_stable > policy.latency_slack_s
    if worse and test.p_b_higher < policy.alpha:
        return Check(LATENCY, FAIL, f"{text} (p={test.p_b_higher:.3g})", figures)
    return Check(LATENCY, PASS, text, figures)


def _quality_figures(q: OnlineQuality) -> list[Any]:
    return [_round(q.auc), _round(q.low), _round(q.high), q.n]


def check_auc(stable: OnlineQuality | None, canary: OnlineQuality | None, policy: CanaryPolicy) -> Check:
    """Compare online AUCs (DeLong, independent samples): pass on non-inferiority, fail when significantly worse.

    Passes when "the canary is worse by ``auc_margin`` or more" is rejected at ``alpha``; fails when "the canary
    is not worse" is rejected and non-inferiority is not shown; waits otherwise, saying how many more labels each
    variant needs at the difference seen now (``needed``).
    """
    if stable is None or canary is None:
        missing = [v for v, q in ((STABLE, stable), (CANARY, canary)) if q is None]
        return Check(AUC, WAIT, f"no logged predictions for {' and '.join(missing)}")
    figures: dict[str, Any] = {"stable": _quality_figures(stable), "canary": _quality_figures(canary)}
    short = []
    for variant, q in ((STABLE, stable), (CANARY, canary)):
        if q.n < policy.min_labels:
            short.append(f"{variant} has {q.n} of {policy.min_labels} labels")
        elif min(q.positives, q.negatives) < policy.min_class_labels:
            short.append(
                f"{variant} has {q.positives} positive and {q.negatives} negative labels"
                f" (needs {policy.min_class_labels} of each)"
            )
    a, b = stable.estimate(), canary.estimate()
    if short or a is None or b is None or a.se is None or b.se is None:
        return Check(AUC, WAIT, "; ".join(short) or "an AUC without an interval", figures)
    test = compare_aucs(a, b)
    p_worse, p_ok = test.p_b_lower, non_inferiority_p(test, policy.auc_margin)
    figures.update(diff=_round(test.diff), p_worse=_round(p_worse), p_ok=_round(p_ok))
    text = (
        f"AUC canary {b.auc:.3f} vs stable {a.auc:.3f}"
        f" (diff {test.diff:+.3f}, 95% CI {test.low:+.3f}..{test.high:+.3f})"
    )
    if p_ok < policy.alpha:
        return Check(AUC, PASS, text, figures)
    if p_worse < policy.alpha:
        return Check(AUC, FAIL, f"{text}, significantly worse (p={p_worse:.3g})", figures)
    effect = test.diff + policy.auc_margin if test.diff > -policy.auc_margin else test.diff
    required = aucs_sample_size(
        unit_variance(a), unit_variance(b), effect, alpha=policy.alpha, power=policy.power, two_sided=False
    )
    needed = still_needed(required, min(a.n, b.n))
    figures["needed"] = needed
    more = f", about {needed} more labels per variant" if needed is not None else ""
    return Check(AUC, WAIT, f"{text}: not decided yet{more}", figures)


def check_drift(drifted: bool | None, pvalue: float | None = None) -> Check:
    """Judge the canary's drift signal (from the drift monitor): drifted fails, not drifted passes, None skips."""
    figures = {} if pvalue is None else {"p": _round(pvalue)}
    if drifted is None:
        return Check(DRIFT, SKIP, "no drift signal given", figures)
    if drifted:
        return Check(DRIFT, FAIL, "the canary's inputs or predictions drifted from its reference profile", figures)
    return Check(DRIFT, PASS, "no drift", figures)


def decide(checks: Iterable[Check], window: int, policy: CanaryPolicy) -> Decision:
    """Promote, continue or roll back from the checks of window ``window`` (1 for the first).

    Any failed check rolls back. Promotion needs every required check to pass. Otherwise the analysis
    continues, until window ``max_windows``, where a canary still undecided is rolled back (fails closed).
    """
    checks = tuple(checks)
    failed = [c for c in checks if c.verdict == FAIL]
    if failed:
        return Decision(ROLLBACK, window, tuple(f"{c.name}: {c.reason}" for c in failed), checks)
    by_name = {c.name: c for c in checks}
    pending = [by_name.get(name) for name in policy.required]
    waiting = [
        f"{c.name}: {c.reason}" if c is not None else "a required check was not run" for c in pending
        if c is None or c.verdict != PASS
    ]  # fmt: skip
    if not waiting:
        return Decision(PROMOTE, window, tuple(f"{c.name}: {c.reason}" for c in checks if c.verdict == PASS), checks)
    if window >= policy.max_windows:
        head = f"no decision after {window} of {policy.max_windows} windows (fails closed)"
        return Decision(ROLLBACK, window, (head, *waiting), checks)
    return Decision(CONTINUE, window, tuple(waiting), checks)


# ----------------------------------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class RouterSnapshot:
    """The router's counters at one scrape.

    Attributes:
        requests: responses by (version, variant, HTTP code).
        buckets: latency histogram by variant: upper bound -> cumulative count.
        died: worker deaths by variant.
    """

    requests: dict[tuple[str, str, str], float]
    buckets: dict[str, dict[float, float]]
    died: dict[str, float]

    @classmethod
    def parse(cls, text: str, model: str) -> RouterSnapshot:
        """Read the router's series of ``model`` from a ``/metrics`` text (Prometheus exposition format)."""
        counts: dict[tuple[str, str, str], float] = {}
        buckets: dict[str, dict[float, float]] = {}
        died: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                if labels.get("model") != model:
                    continue
                if sample.name == "hybridml_router_requests_total":
                    key = (labels["version"], labels["variant"], labels["code"])
                    counts[key] = counts.get(key, 0.0) + sample.value
                elif sample.name == "hybridml_router_seconds_bucket":
                    buckets.setdefault(labels["variant"], {})[float(labels["le"])] = sample.value
                elif sample.name == "hybridml_variant_events_total" and labels.get("event") == "died":
                    died[labels["variant"]] = sample.value
        return cls(counts, buckets, died)

    def since(self, earlier: RouterSnapshot | None) -> RouterSnapshot:
        """The counts of the window from ``earlier`` to this scrape (a counter that went down restarted: kept whole)."""
        if earlier is None:
            return self

        def delta(now: float, before: float | None) -> float:
            return now - before if before is not None and now >= before else now

        return RouterSnapshot(
            requests={k: delta(v, earlier.requests.get(k)) for k, v in self.requests.items()},
            buckets={
                variant: {le: delta(c, earlier.buckets.get(variant, {}).get(le)) for le, c in series.items()}
                for variant, series in self.buckets.items()
            },
            died={k: delta(v, earlier.died.get(k)) for k, v in self.died.items()},
        )

    def outcome(self, version: str, variant: str) -> tuple[int, int]:
        """(5xx responses, responses) of ``version`` serving as ``variant``."""
        total = errors = 0.0
        for (v, role, code), count in self.requests.items():
            if v == version and role == variant:
                total += count
                errors += count if code.startswith("5") else 0
        return int(errors), int(total)

    def latency(self, variant: str) -> list[tuple[float, float]] | None:
        """The cumulative latency buckets of ``variant`` (None when the router has none)."""
        series = self.buckets.get(variant)
        return sorted(series.items()) if series else None


def scrape(endpoint: str, timeout_s: float = 5.0) -> str:
    """The text of ``endpoint``'s ``/metrics``.

    Raises:
        InvalidInputError: ``endpoint`` is not an http(s) URL.
        OSError: the server does not answer (URLError is an OSError).
    """
    if not endpoint.startswith(("http://", "https://")):
        raise InvalidInputError(f"endpoint must be an http:// or https:// URL, got {endpoint!r}")
    url = f"{endpoint.rstrip('/')}/metrics"
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310  # nosec B310 - http(s) only, checked above
        return str(response.read().decode("utf-8"))


# ---------------------------------------------------------------------------------------------------- analysis


@dataclass(frozen=True)
class Figures:
    """Everything one window's checks look at (None: not available, so that check waits)."""

    stable_version: str
    canary_version: str
    traffic: RouterSnapshot | None
    traffic_note: str
    stable_quality: OnlineQuality | None
    canary_quality: OnlineQuality | None
    drifted: bool | None = None
    drift_pvalue: float | None = None


def evaluate(figures: Figures, window: int, policy: CanaryPolicy) -> Decision:
    """Run every check on ``figures`` and decide (pure)."""
    traffic = figures.traffic
    if traffic is None:
        error = check_error_rate(None, None, policy)
        latency = check_latency(None, None, policy)
        if figures.traffic_note:
            error = replace(error, reason=f"{error.reason}: {figures.traffic_note}")
            latency = replace(latency, reason=f"{latency.reason}: {figures.traffic_note}")
    else:
        error = check_error_rate(
            traffic.outcome(figures.stable_version, STABLE),
            traffic.outcome(figures.canary_version, CANARY),
            policy,
            canary_died=traffic.died.get(CANARY, 0) > 0,
        )
        latency = check_latency(traffic.latency(STABLE), traffic.latency(CANARY), policy)
    checks = [
        error,
        latency,
        check_auc(figures.stable_quality, figures.canary_quality, policy),
        check_drift(figures.drifted, figures.drift_pvalue),
    ]
    decision = decide(checks, window, policy)
    return replace(decision, stable_version=figures.stable_version, canary_version=figures.canary_version)


class CanaryAnalysis:
    """Analyse one endpoint's canary window by window, act through its deploy target, record each decision.

    Args:
        target: the deploy target (any :class:`~hybridml.deploy.contract.DeployTarget`).
        registry: where decisions are recorded (:meth:`record_event` and :meth:`history`).
        name: the deployment (and registered model) name.
        payload_log: the endpoint's payload log (None: online AUC waits).
        feedback_log: the endpoint's feedback log (None: online AUC waits).
        policy: thresholds and sample sizes.
        drifted: drift signal of the canary from the drift monitor (None: not judged).
        drift_pvalue: the p-value behind it, recorded with the figures.
        fetch_metrics: endpoint URL -> ``/metrics`` text (injectable; default :func:`scrape`).
        sleep: sleep function (injectable).
    """

    def __init__(
        self,
        target: Any,
        registry: Any,
        name: str,
        *,
        payload_log: Path | None = None,
        feedback_log: Path | None = None,
        policy: CanaryPolicy | None = None,
        drifted: bool | None = None,
        drift_pvalue: float | None = None,
        fetch_metrics: Callable[[str], str] = scrape,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.target = target
        self.registry = registry
        self.name = name
        self.payload_log = payload_log
        self.feedback_log = feedback_log
        self.policy = policy or CanaryPolicy()
        self.drifted = drifted
        self.drift_pvalue = drift_pvalue
        self._fetch_metrics = fetch_metrics
        self._sleep = sleep

    def versions(self) -> tuple[str, str, str]:
        """(endpoint URL, stable version, canary version) now.

        Raises:
            ConflictError: the deployment has no canary.
        """
        deployment = self.target.status(self.name)
        if deployment.canary_version is None:
            raise ConflictError(f"deployment {self.name!r} has no canary to analyse")
        return deployment.endpoint, str(deployment.stable_version), str(deployment.canary_version)

    def snapshot(self, endpoint: str) -> tuple[RouterSnapshot | None, str]:
        """The router's counters now, or (None, why) when the server does not answer."""
        try:
            return RouterSnapshot.parse(self._fetch_metrics(endpoint), self.name), ""
        except (OSError, ValueError) as exc:
            return None, f"{type(exc).__name__}: {exc}"[:200]

    def quality(
        self, stable: str, canary: str, after: float | None = None
    ) -> tuple[OnlineQuality | None, OnlineQuality | None]:
        """Online AUC of stable and canary over the predictions since the canary's first logged request.

        Args:
            stable: the stable version.
            canary: the canary version.
            after: when this canary trial began at the earliest (the version's last promote or rollback):
                requests it answered as a canary in an earlier trial are not this trial's figures.
        """
        if self.payload_log is None or self.feedback_log is None:
            return None, None
        from hybridml.serving.payload_log import read_records

        payload = [r for r in read_records(self.payload_log) if r.get("model") == self.name]
        since = first_seen(payload, canary, CANARY, after=after)
        if since is None:
            return None, None
        joined = online_quality(payload, read_records(self.feedback_log), since=since, model=self.name)
        return joined.get((stable, STABLE)), joined.get((canary, CANARY))

    def trial(self, canary: str) -> tuple[int, float | None]:
        """(windows already decided ``continue``, when the trial began at the earliest) from the registry history.

        A trial of a version as canary ends with its promote or rollback event; the ``continue`` events after the
        last one are this trial's windows, so a repeated ``analyze`` (a cron job) reaches ``max_windows`` too.
        A version label that is no registered version (another model's ``MODEL-VERSION``) has no history: (0, None).
        """
        if not canary.isdigit():
            return 0, None
        count, began = 0, None
        for event in sorted(self.registry.history(self.name, int(canary)), key=lambda e: e.at):
            if event.action != "canary":
                continue
            if event.detail == CONTINUE:
                count += 1
            else:
                count, began = 0, datetime.fromisoformat(event.at).timestamp()
        return count, began

    def prior_windows(self, canary: str) -> int:
        """Windows already decided ``continue`` in this canary trial (see :meth:`trial`)."""
        return self.trial(canary)[0]

    def analyze(
        self,
        window_s: float = 0.0,
        *,
        window: int | None = None,
        start: RouterSnapshot | None = None,
    ) -> tuple[Decision, RouterSnapshot | None]:
        """Decide on one window: counters from ``start`` (or a scrape now) to a scrape ``window_s`` later.

        With ``window_s`` 0 and no ``start`` the counters since the server started are used.

        Returns:
            The decision and the closing scrape (the next window's start).
        """
        endpoint, stable, canary = self.versions()
        note = ""
        if start is None and window_s > 0:
            start, note = self.snapshot(endpoint)
        if window_s > 0:
            self._sleep(window_s)
        end, end_note = self.snapshot(endpoint)
        # A window whose opening scrape failed has no counts of its own: the lifetime totals are not its figures.
        opened = window_s <= 0 or start is not None
        traffic = end.since(start) if end is not None and opened else None
        note = end_note or (f"no scrape at the start of the window ({note})" if not opened else "")
        prior, began = self.trial(canary)
        stable_q, canary_q = self.quality(stable, canary, began)
        figures = Figures(stable, canary, traffic, note, stable_q, canary_q, self.drifted, self.drift_pvalue)
        number = window if window is not None else prior + 1
        return evaluate(figures, number, self.policy), end

    def apply(self, decision: Decision) -> Decision:
        """Act on ``decision`` through the deploy target and record it in the registry history.

        Promote and rollback call ``target.promote`` / ``target.rollback``; every decision, ``continue``
        included, is recorded as a ``canary`` event of the canary version with the figures as its reason.
        """
        error = None
        try:
            if decision.action == PROMOTE:
                self.target.promote(self.name)
            elif decision.action == ROLLBACK:
                self.target.rollback(self.name)
        except Exception as exc:
            error = exc
        done = replace(decision, applied=error is None)
        reason = done.reason_json()
        if error is not None:
            reason = json.dumps({"error": str(error)[:300], "figures": reason[:600]}, separators=(",", ":"))
        detail = decision.action if error is None else f"{decision.action} failed"
        self.registry.record_event(self.name, decision.canary_version, "canary", detail, reason=reason)
        if error is not None:
            raise error
        return done

    def watch(self, interval_s: float, max_windows: int | None = None) -> list[Decision]:
        """Analyse and act window after window (each ``interval_s`` long) until promote or rollback.

        ``max_windows`` (default: the policy's) bounds the windows; the last undecided one rolls back.
        """
        if interval_s <= 0:
            raise InvalidInputError(f"interval must be more than 0 seconds, got {interval_s}")
        if max_windows is not None:
            self.policy = replace(self.policy, max_windows=max_windows)
        decisions: list[Decision] = []
        _, _, canary = self.versions()
        number = self.prior_windows(canary)
        start = None
        while True:
            number += 1
            if start is None:
                endpoint, _, _ = self.versions()
                start, _ = self.snapshot(endpoint)
            decision, start = self.analyze(interval_s, window=number, start=start)
            decisions.append(self.apply(decision))
            if decision.action != CONTINUE:
                return decisions


def decisions_json(decisions: Iterable[Decision]) -> list[dict[str, Any]]:
    """Decisions as JSON-ready data."""
    return [d.to_dict() for d in decisions]
