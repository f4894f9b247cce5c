"""Figures logged where users look (MLflow run artifacts): ROC curve, HPO history."""

from __future__ import annotations

from typing import Any

from hybridml.core.evaluate import RocResult


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # steps run headless
    import matplotlib.pyplot as plt

    return plt


def roc_figure(result: RocResult, title: str) -> Any:
    """The ROC curve with its AUC in the legend."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(result.fpr, result.tpr, label=f"ROC AUC = {result.roc_auc:.4f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def hpo_history_figure(values: list[float], title: str) -> Any:
    """Objective value per trial and the best so far."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    best: list[float] = []
    for v in values:
        best.append(max(v, best[-1]) if best else v)
    ax.scatter(range(len(values)), values, s=14, label="trial")
    ax.plot(range(len(best)), best, color="tab:red", label="best so far")
    ax.set(xlabel="trial", ylabel="validation ROC AUC", title=title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def close(fig: Any) -> None:
    """Free a figure's memory."""
    _pyplot().close(fig)
