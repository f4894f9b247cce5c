"""What the parts of the MLflow registry share: one client, tag names, argument checks and translated calls."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion, RegisteredModel

from hybridml.adapters import mlflow_client
from hybridml.errors import InvalidInputError, NotFoundError
from hybridml.registry._mlflow import history
from hybridml.registry._mlflow.retries import retry

T = TypeVar("T")

STATUS_TAG = "approval_status"  # SageMaker's ModelApprovalStatus values
RUN_KEY_TAG = "hybridml.run_key"
MODEL_URI_TAG = "hybridml.model_uri"
# Plain tag keys the pipeline passes to register(); VersionInfo exposes them as typed fields.
ROC_AUC_TAG = "roc_auc"
DATA_HASH_TAG = "data_hash"
PIPELINE_RUN_ID_TAG = "pipeline_run_id"
BRANCH_TAG = "branch"

# What MLflow itself accepts as a name to look up; creating a model needs the stricter core naming rule.
_NAME_RE = re.compile(r"^[^/:@'\"\\\s][^/:@'\"\\]{0,254}$")
_KEY_RE = re.compile(r"^[^'\"\\]{1,200}$")

# Called as hook(point, details) at named points of a change (see transitions and lock); tests inject a
# conflicting write there to force a race deterministically instead of hoping that threads collide.
Hook = Callable[[str, dict[str, Any]], None]


def _no_hook(point: str, details: dict[str, Any]) -> None:
    return None


@dataclass
class Backend:
    """One MLflow tracking/registry URI and how to talk to it on behalf of ``user``."""

    tracking_uri: str
    user: str
    client: MlflowClient
    clock: Callable[[], float] = time.time
    attempts: int = 10
    backoff_s: float = 0.05
    sleep: Callable[[float], None] = time.sleep
    hook: Hook = field(default=_no_hook)

    def call(self, op: Callable[[], T], what: str) -> T:
        """Run one MLflow call once, translating its failure."""
        return mlflow_client.call(op, what, self.tracking_uri)

    def retry(self, op: Callable[[], T], what: str) -> T:
        """Run one MLflow call, retrying only lost write races."""
        return retry(
            op, what, where=self.tracking_uri, attempts=self.attempts, backoff_s=self.backoff_s, sleep=self.sleep
        )

    # ------------------------------------------------------------------ reads every part needs

    def get_model(self, name: str) -> RegisteredModel:
        """The registered model ``name``.

        Raises:
            NotFoundError: it does not exist.
        """
        check_name(name)
        try:
            return self.retry(lambda: self.client.get_registered_model(name), f"model {name!r}")
        except NotFoundError as exc:
            raise NotFoundError(f"model {name!r} not found") from exc.__cause__

    def get_mv(self, name: str, number: int) -> ModelVersion:
        """Version ``number`` of ``name``.

        Raises:
            NotFoundError: the model or the version does not exist.
        """
        self.get_model(name)
        try:
            return self.retry(
                lambda: self.client.get_model_version(name, str(number)), f"model {name!r} version {number}"
            )
        except NotFoundError as exc:
            raise NotFoundError(f"model {name!r} has no version {number}") from exc.__cause__

    def search_versions(self, name: str) -> list[ModelVersion]:
        """Every version of ``name`` (the model must exist)."""
        self.get_model(name)
        return list(
            self.paged(
                lambda token: self.client.search_model_versions(
                    f"name = '{name}'", max_results=10_000, page_token=token
                )
            )
        )

    def paged(self, fetch: Callable[[str | None], Any]) -> Iterator[Any]:
        """Every item of a paged MLflow search."""
        token: str | None = None
        while True:
            page = self.retry(lambda token=token: fetch(token), "registry search")  # type: ignore[misc]
            yield from page
            token = page.token
            if not token:
                return

    # ------------------------------------------------------------------ writes every part needs

    def set_mv_tag(self, name: str, number: int, key: str, value: str) -> None:
        """Set one tag of a version (an upsert: retried when contended)."""
        self.retry(
            lambda: self.client.set_model_version_tag(name, str(number), key, value),
            f"tag {key!r} of model {name!r} version {number}",
        )

    def record(self, name: str, version: int | None, event: tuple[str, str], *, on_model: bool) -> None:
        """Write one encoded history event: alias moves on the registered model, the rest on the version."""
        key, value = event
        if on_model or version is None:
            self.retry(lambda: self.client.set_registered_model_tag(name, key, value), f"history of model {name!r}")
        else:
            self.set_mv_tag(name, version, key, value)

    def event(self, action: str, version: int | None, detail: str, reason: str, actor: str | None) -> tuple[str, str]:
        """Encode one history event now (its key fixes its place in the history)."""
        return history.encode(
            clock_s=self.clock(),
            actor=actor or self.user,
            action=action,
            version=version,
            detail=detail,
            reason=reason,
        )


def check_name(name: str) -> None:
    """Refuse what MLflow cannot look up (registering applies the stricter core naming rule)."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidInputError(f"invalid model name {name!r} (no '/', ':', '@', quotes; at most 255 characters)")


def check_key(what: str, value: str) -> None:
    """Refuse a run key MLflow's search filter could not quote."""
    if not isinstance(value, str) or not _KEY_RE.match(value):
        raise InvalidInputError(f"invalid {what} {value!r} (1-200 characters, no quotes or backslashes)")


def version_number(version: int | str) -> int:
    """``version`` as a positive integer."""
    text = str(version).strip()
    if not text.isdigit() or int(text) < 1:
        raise InvalidInputError(f"invalid model version {version!r} (expected a positive integer)")
    return int(text)


def tag_value(value: Any) -> str:
    """Tags are strings."""
    return value if isinstance(value, str) else str(value)


def name_matches(name: str) -> bool:
    """Whether ``name`` is one MLflow can look up."""
    return bool(_NAME_RE.match(name))
