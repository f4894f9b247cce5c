"""Approval policy: the statuses are SageMaker's model-package statuses."""

from __future__ import annotations

from dataclasses import dataclass

from hybridml.errors import InvalidInputError

PENDING = "PendingManualApproval"
APPROVED = "Approved"
REJECTED = "Rejected"
STATUSES = (PENDING, APPROVED, REJECTED)


def check_threshold(name: str, value: float) -> float:
    """Return ``value`` if it lies in [0, 1], else raise naming the parameter."""
    if not 0.0 <= value <= 1.0:
        raise InvalidInputError(f"{name} must be between 0 and 1, got {value}")
    return value


@dataclass(frozen=True)
class Decision:
    """What the policy decided and why (recorded in the version's history)."""

    status: str
    reason: str


def decide(roc_auc: float, threshold: float, champion_roc_auc: float | None, tolerance: float) -> Decision:
    """Automatic approval of a newly registered version.

    - below ``threshold``: stays ``PendingManualApproval`` (a person may still approve it);
    - more than ``tolerance`` worse than the current champion: ``Rejected``;
    - otherwise ``Approved`` (and the caller moves the ``champion`` alias).
    """
    check_threshold("threshold", threshold)
    check_threshold("tolerance", tolerance)
    if roc_auc < threshold:
        return Decision(PENDING, f"ROC AUC {roc_auc:.4f} is below the threshold {threshold:.4f}; needs manual approval")
    if champion_roc_auc is not None and roc_auc < champion_roc_auc - tolerance:
        return Decision(
            REJECTED,
            f"ROC AUC {roc_auc:.4f} is worse than the champion's {champion_roc_auc:.4f} by more than {tolerance:.4f}",
        )
    against = f"; champion has {champion_roc_auc:.4f}" if champion_roc_auc is not None else "; no champion yet"
    return Decision(APPROVED, f"ROC AUC {roc_auc:.4f} >= threshold {threshold:.4f}{against}")
