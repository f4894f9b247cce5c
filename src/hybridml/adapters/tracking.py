"""MLflow experiment tracking: runs, params, metrics and figures of pipeline steps."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from mlflow.entities import Metric, Param

from hybridml.adapters import mlflow_client
from hybridml.adapters.mlflow_client import Failure, classify, is_backend_error
from hybridml.errors import HybridmlError, InvalidInputError, NotReadyError

_log = logging.getLogger(__name__)

T = TypeVar("T")

PARENT_TAG = "mlflow.parentRunId"


def artifact_location(tracking_uri: str) -> str | None:
    """Where a new experiment keeps artifacts: beside a SQLite/file store, or the server's default.

    MLflow otherwise defaults to ``./mlruns`` relative to the working directory, which scatters the
    embedded default's state; a server decides for itself.
    """
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite":
        db = Path(parsed.path.removeprefix("/")) if parsed.path.startswith("//") else Path(parsed.path)
        return (db.parent / "mlartifacts").resolve().as_uri()
    return None


class Tracker:
    """Thin, explicit wrapper over :class:`mlflow.MlflowClient` (no global MLflow state).

    MLflow failures leave as :mod:`hybridml.errors` types: an unreachable tracking server is a
    :class:`~hybridml.errors.NotReadyError` (exit code 5) that names its URI, within seconds.
    """

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        self.tracking_uri = tracking_uri
        self.client = mlflow_client.client(tracking_uri)
        self.experiment_id = self._experiment(experiment)

    def _call(self, op: Callable[[], T], what: str) -> T:
        return mlflow_client.call(op, what, self.tracking_uri)

    def _experiment(self, name: str) -> str:
        what = f"experiment {name!r}"
        found = self._call(lambda: self.client.get_experiment_by_name(name), what)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self.client.create_experiment(name, artifact_location=artifact_location(self.tracking_uri)))
        except Exception as exc:
            if not is_backend_error(exc):
                raise
            if classify(exc) is not Failure.EXISTS:
                raise mlflow_client.translate(exc, what, self.tracking_uri) from exc
            # Another step created it at the same moment.
            found = self._call(lambda: self.client.get_experiment_by_name(name), what)
            if found is None:
                raise mlflow_client.translate(exc, what, self.tracking_uri) from exc
            return str(found.experiment_id)

    def start_run(self, name: str, tags: dict[str, str], parent_run_id: str | None = None) -> str:
        """Create a run (a child of ``parent_run_id`` if given) and return its id."""
        all_tags = dict(tags)
        if parent_run_id:
            all_tags[PARENT_TAG] = parent_run_id
        run = self._call(
            lambda: self.client.create_run(self.experiment_id, run_name=name, tags=all_tags), f"run {name!r}"
        )
        return str(run.info.run_id)

    def pipeline_run(self, pipeline_run_id: str, tags: dict[str, str]) -> str:
        """The parent MLflow run of one pipeline run, created once and found again by later steps."""
        found = self._find_pipeline_run(pipeline_run_id)
        if found is not None:
            return found
        return self.start_run(
            f"pipeline-{pipeline_run_id}",
            {**tags, "hybridml.pipeline_run_id": pipeline_run_id, "hybridml.role": "pipeline"},
        )

    def finish_pipeline_run(self, pipeline_run_id: str) -> None:
        """Mark the parent run of a pipeline run FINISHED, if it exists and is still running (its last step)."""
        found = self._find_pipeline_run(pipeline_run_id)
        if found is not None and self._call(lambda: self.client.get_run(found), found).info.status == "RUNNING":
            self.end_run(found)

    def _find_pipeline_run(self, pipeline_run_id: str) -> str | None:
        existing = self._call(
            lambda: self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`hybridml.pipeline_run_id` = '{pipeline_run_id}' "
                "and tags.`hybridml.role` = 'pipeline'",
                max_results=1,
            ),
            f"pipeline run {pipeline_run_id!r}",
        )
        return str(existing[0].info.run_id) if existing else None

    def log(
        self, run_id: str, *, params: dict[str, Any] | None = None, metrics: dict[str, float] | None = None
    ) -> None:
        """Log params and metrics in one batch."""
        try:
            self.client.log_batch(
                run_id,
                params=[Param(k, str(v)[:6000]) for k, v in (params or {}).items()],
                metrics=[Metric(k, float(v), 0, 0) for k, v in (metrics or {}).items()],
            )
        except Exception as exc:
            if not is_backend_error(exc):
                raise
            error = mlflow_client.translate(exc, f"params/metrics of run {run_id}", self.tracking_uri)
            if isinstance(error, NotReadyError):
                raise error from exc
            raise InvalidInputError(f"MLflow rejected params/metrics for run {run_id}: {error.message}") from exc

    def log_figure(self, run_id: str, figure: Any, artifact_file: str) -> None:
        """Save a matplotlib figure as a run artifact (shown in the MLflow UI)."""
        self._call(lambda: self.client.log_figure(run_id, figure, artifact_file), f"figure of run {run_id}")

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        """Save text (JSON, Markdown) as a run artifact."""
        self._call(lambda: self.client.log_text(run_id, text, artifact_file), f"{artifact_file} of run {run_id}")

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        """Mark a run finished (or FAILED)."""
        self._call(lambda: self.client.set_terminated(run_id, status=status), f"run {run_id}")

    @contextlib.contextmanager
    def guard(self, run_id: str) -> Iterator[None]:
        """Mark run ``run_id`` and its pipeline parent run FAILED when the block raises, then re-raise.

        A step that fails leaves no MLflow run RUNNING. When the failure is that MLflow is not reachable,
        nothing is tried (there is no one to tell, and trying would only delay the error).
        """
        try:
            yield
        except BaseException as exc:
            if not _unreachable(exc):
                self._mark_failed(run_id)
            raise

    def _mark_failed(self, run_id: str) -> None:
        try:
            run = self.client.get_run(run_id)
            parent = run.data.tags.get(PARENT_TAG)
            for rid in (run_id, parent):
                if rid:
                    self.client.set_terminated(rid, status="FAILED")
        except Exception as exc:  # the step's own error is what the user must see
            if not is_backend_error(exc):
                raise
            _log.warning("could not mark MLflow run %s as FAILED: %s", run_id, mlflow_client.first_line(exc))


def _unreachable(exc: BaseException) -> bool:
    if isinstance(exc, NotReadyError):
        return True
    if isinstance(exc, HybridmlError) or not is_backend_error(exc):
        return False
    return classify(exc) is Failure.UNREACHABLE
