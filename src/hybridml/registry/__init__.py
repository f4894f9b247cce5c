"""Model registry: the contract (``ModelRegistry``) and its MLflow backend (``Registry``).

One module per role lives under ``_mlflow``: ``writing`` (bundles as logged models), ``registration``,
``reads``, ``history`` (events as tags), ``retries`` (only lost write races), ``lock`` and ``transitions``
(compare-and-set status and alias changes, applying the champion rule of :mod:`hybridml.core.approval`).
"""

from hybridml.registry._mlflow.backend import RUN_KEY_TAG, STATUS_TAG
from hybridml.registry._mlflow.history import HISTORY_PREFIX, MAX_REASON_CHARS
from hybridml.registry._mlflow.registry import Registry
from hybridml.registry._mlflow.retries import retry
from hybridml.registry.protocol import CHAMPION, HistoryEvent, ModelRegistry, ModelSummary, Policy, VersionInfo

__all__ = [
    "CHAMPION",
    "HISTORY_PREFIX",
    "MAX_REASON_CHARS",
    "RUN_KEY_TAG",
    "STATUS_TAG",
    "HistoryEvent",
    "ModelRegistry",
    "ModelSummary",
    "Policy",
    "Registry",
    "VersionInfo",
    "retry",
]
