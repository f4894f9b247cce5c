"""Evaluation: ROC AUC and the ROC curve that is drawn in the KFP UI and MLflow."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from hybridml.errors import InvalidInputError


@dataclass(frozen=True)
class RocResult:
    """ROC AUC and curve points (false-positive rate, true-positive rate, thresholds)."""

    roc_auc: float
    fpr: list[float]
    tpr: list[float]
    thresholds: list[float]


def roc(y_true: np.ndarray, scores: np.ndarray, *, max_points: int = 200) -> RocResult:
    """ROC AUC of ``scores`` against 0/1 labels; the curve is thinned to at most ``max_points`` points."""
    if len(np.unique(y_true)) != 2:
        raise InvalidInputError("ROC AUC needs both classes in the evaluation labels")
    auc = float(roc_auc_score(y_true, scores))
    fpr, tpr, thr = roc_curve(y_true, scores)
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).astype(int))
        fpr, tpr, thr = fpr[keep], tpr[keep], thr[keep]
    # roc_curve's first threshold is +inf, which is not JSON; cap it just above the largest score.
    thr = np.where(np.isfinite(thr), thr, 1.0 + float(np.max(scores, initial=0.0)))
    return RocResult(roc_auc=auc, fpr=fpr.tolist(), tpr=tpr.tolist(), thresholds=thr.tolist())
