"""Retrying MLflow writes that lost a race with another writer, and nothing else."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from hybridml.adapters.mlflow_client import RETRYABLE, Failure, classify, first_line, is_backend_error, translate
from hybridml.errors import ConflictError, NotReadyError

_log = logging.getLogger(__name__)

T = TypeVar("T")


def retry(
    op: Callable[[], T],
    what: str,
    *,
    where: str = "",
    attempts: int = 10,
    backoff_s: float = 0.05,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``op``, retrying with jittered exponential backoff only the failures :func:`classify` calls races.

    A lost write race (:attr:`Failure.RACE`) or a server saying "try again" (:attr:`Failure.BUSY`) is retried;
    anything else (not found, invalid, unreachable, unknown) is translated at once, so a stopped server is
    reported in seconds and a bad argument is never tried twice.

    Raises:
        ConflictError: still losing races after ``attempts`` tries (the message names ``what``).
        NotReadyError: the store is unreachable, or still busy after ``attempts`` tries.
        HybridmlError: the translation of any other failure (not found, invalid, ...).
    """
    bound = backoff_s
    for attempt in range(1, attempts + 1):
        try:
            return op()
        except Exception as exc:
            if not is_backend_error(exc):
                raise
            kind = classify(exc)
            if kind not in RETRYABLE:
                raise translate(exc, what, where, kind) from exc
            if attempt == attempts:
                if kind is Failure.BUSY:
                    raise NotReadyError(
                        f"{what}: MLflow at {where} still busy after {attempt} attempts: {first_line(exc)}"
                    ) from exc
                raise ConflictError(
                    f"{what}: backend still contended after {attempt} attempts: {first_line(exc)}"
                ) from exc
            _log.debug("retrying %s after %s (attempt %d): %s", what, kind.value, attempt, exc)
        # Full jitter: concurrent writers that collided once should not collide again in lock-step.
        sleep(random.uniform(0, bound))  # noqa: S311 - jitter, not security
        bound = min(bound * 2, 2.0)
    raise AssertionError("unreachable")  # pragma: no cover
