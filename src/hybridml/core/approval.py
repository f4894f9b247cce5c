"""Approval policy and the champion rule (pure): statuses are SageMaker's model-package statuses."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hybridml.errors import ConflictError, InvalidInputError

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
    if not math.isfinite(roc_auc):  # NaN compares False with everything: it would pass every test below
        return Decision(PENDING, f"ROC AUC {roc_auc} is not a finite score; needs manual approval")
    if roc_auc < threshold:
        return Decision(PENDING, f"ROC AUC {roc_auc:.4f} is below the threshold {threshold:.4f}; needs manual approval")
    if champion_roc_auc is not None and roc_auc < champion_roc_auc - tolerance:
        return Decision(
            REJECTED,
            f"ROC AUC {roc_auc:.4f} is worse than the champion's {champion_roc_auc:.4f} by more than {tolerance:.4f}",
        )
    against = f"; champion has {champion_roc_auc:.4f}" if champion_roc_auc is not None else "; no champion yet"
    return Decision(APPROVED, f"ROC AUC {roc_auc:.4f} >= threshold {threshold:.4f}{against}")


def auto_decision(
    status: str, roc_auc: float | None, threshold: float, champion_roc_auc: float | None, tolerance: float
) -> Decision | None:
    """What the pipeline's policy does to a version now in ``status``, or None to leave it as it is.

    Only a pending version is decided: a status set by a person, or by an earlier try of the same step,
    stands. A decision that keeps the version pending changes nothing either.

    Raises:
        InvalidInputError: the version has no ROC AUC to decide on, or a threshold is outside [0, 1].
    """
    if status != PENDING:
        return None
    if roc_auc is None:
        raise InvalidInputError("the version has no roc_auc tag, so the approval policy cannot decide on it")
    decision = decide(roc_auc, threshold, champion_roc_auc, tolerance)
    return None if decision.status == PENDING else decision


# --------------------------------------------------------------------------- transitions and the champion rule

CHAMPION = "champion"

# A version starts pending (at registration) and leaves it for good: a decision is revised by the other
# decision, never undone. Approving an Approved version again is allowed (a re-review, or bringing an older
# approved version back as champion); rejecting a Rejected one again only records the reason.
TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING: frozenset({APPROVED, REJECTED}),
    APPROVED: frozenset({APPROVED, REJECTED}),
    REJECTED: frozenset({APPROVED, REJECTED}),
}


@dataclass(frozen=True)
class Change:
    """One status transition of a version and what it does to the ``champion`` alias.

    ``champion_before`` / ``champion_after`` are version numbers (None: no champion).
    """

    version: int
    status_before: str
    status_after: str
    champion_before: int | None
    champion_after: int | None

    @property
    def moves_champion(self) -> bool:
        """Whether the alias changes."""
        return self.champion_before != self.champion_after

    @property
    def removes_champion(self) -> bool:
        """Whether the alias is taken away (the champion was rejected)."""
        return self.champion_before is not None and self.champion_after is None


def check_status(status: str) -> str:
    """Return ``status`` if it is an approval status, else raise naming the choices."""
    if status not in STATUSES:
        raise InvalidInputError(f"unknown approval status {status!r} (choose from {', '.join(STATUSES)})")
    return status


def plan(version: int, status_before: str, status_after: str, champion: int | None) -> Change:
    """The champion rule: what setting ``status_after`` on ``version`` changes, given the current champion.

    - ``Approved`` makes ``version`` the champion (no move when it already is);
    - ``Rejected`` of the champion removes the alias (the model has no champion until one is approved);
    - anything else leaves the alias where it is.

    Raises:
        InvalidInputError: ``status_after`` is not an approval status.
        ConflictError: the transition is not allowed (e.g. back to pending).
    """
    check_status(status_after)
    allowed = TRANSITIONS.get(status_before, frozenset())
    if status_after not in allowed:
        raise ConflictError(
            f"version {version} is {status_before}; it cannot become {status_after} "
            "(a decision is revised by approving or rejecting again, not undone)"
        )
    after = champion
    if status_after == APPROVED:
        after = version
    elif status_after == REJECTED and champion == version:
        after = None
    return Change(version, status_before, status_after, champion, after)


def check_alias(alias: str, version: int, status: str) -> None:
    """Refuse to point the ``champion`` alias at a version that is not Approved.

    Raises:
        ConflictError: ``alias`` is ``champion`` and ``status`` is not Approved.
    """
    if alias == CHAMPION and status != APPROVED:
        raise ConflictError(f"version {version} is {status}; only an Approved version can be the {CHAMPION}")


def check_approved(name: str, version: int | str, status: str, action: str = "are deployed") -> None:
    """Refuse a version that is not Approved: only Approved versions leave the registry for a target.

    Raises:
        ConflictError: naming the version, its status and ``action`` (what only Approved versions do).
    """
    if status != APPROVED:
        raise ConflictError(f"{name} version {version} is {status}, only Approved versions {action}")
