"""A/B test report: per-variant outcome (online AUC or positive-label rate), a significance test, and a verdict."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hybridml.core.quality import (
    aucs_sample_size,
    compare_aucs,
    proportions_sample_size,
    still_needed,
    two_proportions,
    unit_variance,
)
from hybridml.errors import InvalidInputError
from hybridml.monitoring.feedback_join import OnlineQuality

METRICS = ("auc", "positive_rate")
A_BETTER, B_BETTER, UNDECIDED = "A better", "B better", "no difference yet"


def parse_key(text: str) -> tuple[str, str]:
    """``VERSION:VARIANT`` (e.g. ``3:canary``) as a (version, variant) key."""
    version, sep, variant = text.rpartition(":")
    if not sep or not variant:
        raise InvalidInputError(f"a variant is given as VERSION:VARIANT (e.g. 3:canary), got {text!r}")
    return version, variant


def pick_variants(
    quality: Mapping[tuple[str, str], OnlineQuality], a: tuple[str, str] | None = None, b: tuple[str, str] | None = None
) -> tuple[tuple[str, str], tuple[str, str]]:
    """The two (version, variant) groups to compare: the given ones, else stable (A) against canary (B).

    Without ``b`` the canary is taken, or the shadow when no canary answered. Where a role was played by
    several versions over the log, the one with the most joined labels is taken.

    Raises:
        InvalidInputError: a group that is not in the logs, or no second group to compare with.
    """

    def best(variant: str) -> tuple[str, str] | None:
        keys = [k for k in quality if k[1] == variant]
        return max(keys, key=lambda k: (quality[k].n, k[0])) if keys else None

    found = ", ".join(f"{v}:{r}" for v, r in quality) or "none"
    chosen_a = a or best("stable")
    chosen_b = b or best("canary") or best("shadow")
    for key, role in ((chosen_a, "A"), (chosen_b, "B")):
        if key is None or key not in quality:
            shown = f"{key[0]}:{key[1]}" if key else "no default"
            raise InvalidInputError(f"variant {role} ({shown}) has no logged predictions; found: {found}")
    assert chosen_a is not None and chosen_b is not None
    if chosen_a == chosen_b:
        raise InvalidInputError(f"A and B are the same group {chosen_a[0]}:{chosen_a[1]}")
    return chosen_a, chosen_b


def _side(key: tuple[str, str], q: OnlineQuality, metric: str) -> dict[str, Any]:
    side: dict[str, Any] = {"version": key[0], "variant": key[1], "n": q.n, "positives": q.positives}
    if metric == "auc":
        side.update(value=q.auc, low=q.low, high=q.high)
    else:
        side["value"] = q.positive_rate
    return side


def ab_report(
    quality: Mapping[tuple[str, str], OnlineQuality],
    a: tuple[str, str],
    b: tuple[str, str],
    *,
    metric: str = "auc",
    alpha: float = 0.05,
    power: float = 0.8,
    effect: float | None = None,
) -> dict[str, Any]:
    """Compare B with A on ``metric`` with a two-sided test; higher is better for both metrics.

    Args:
        quality: :func:`~hybridml.monitoring.feedback_join.online_quality` of the logs.
        a: the (version, variant) of A.
        b: the (version, variant) of B.
        metric: ``auc`` (DeLong test of independent AUCs) or ``positive_rate`` (the share of requests labelled
            positive, e.g. a conversion; pooled two-proportion z-test).
        alpha: level of the test.
        power: power for the sample size still needed.
        effect: the difference the sample size is planned for (default: the difference seen now).

    Returns:
        ``metric``, ``a`` and ``b`` (version, variant, n, value...), ``difference`` (B - A) with its 95 %
        interval, ``p_value``, ``needed_per_variant`` (more labelled requests each variant needs to detect
        ``effect`` with ``power``; None when no finite number would), ``verdict`` and ``reason``.
    """
    if metric not in METRICS:
        raise InvalidInputError(f"unknown metric {metric!r} (choose from {', '.join(METRICS)})")
    qa, qb = quality[a], quality[b]
    report: dict[str, Any] = {
        "metric": metric,
        "a": _side(a, qa, metric),
        "b": _side(b, qb, metric),
        "alpha": alpha,
        "power": power,
        "difference": None,
        "low": None,
        "high": None,
        "p_value": None,
        "needed_per_variant": None,
        "verdict": UNDECIDED,
    }
    if metric == "auc":
        ea, eb = qa.estimate(), qb.estimate()
        if ea is None or eb is None or ea.se is None or eb.se is None:
            report["reason"] = "an AUC needs at least two labels of each class in both variants"
            return report
        test = compare_aucs(ea, eb)
        planned = effect if effect is not None else test.diff
        required = aucs_sample_size(unit_variance(ea), unit_variance(eb), planned, alpha=alpha, power=power)
    else:
        if qa.n == 0 or qb.n == 0:
            report["reason"] = "a positive rate needs labels in both variants"
            return report
        test = two_proportions(qa.positives, qa.n, qb.positives, qb.n)
        planned = effect if effect is not None else test.diff
        target = min(1.0, max(0.0, test.a + planned))
        required = proportions_sample_size(test.a, target, alpha=alpha, power=power)
    report.update(
        difference=test.diff,
        low=test.low,
        high=test.high,
        p_value=test.p_value,
        needed_per_variant=still_needed(required, min(qa.n, qb.n)),
    )
    if test.p_value < alpha:
        report["verdict"] = B_BETTER if test.diff > 0 else A_BETTER
        report["reason"] = f"{metric} differs by {test.diff:+.4f} (p={test.p_value:.3g} < {alpha})"
    else:
        report["reason"] = f"{metric} differs by {test.diff:+.4f}, not significant (p={test.p_value:.3g})"
    return report
