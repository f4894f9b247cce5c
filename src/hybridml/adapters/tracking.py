"""MLflow experiment tracking: runs, params, metrics and figures of pipeline steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from hybridml.errors import InvalidInputError


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
    """Thin, explicit wrapper over :class:`mlflow.MlflowClient` (no global MLflow state)."""

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.experiment_id = self._experiment(experiment)

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self.client.create_experiment(name, artifact_location=artifact_location(self.tracking_uri)))
        except MlflowException:
            # Another step created it at the same moment.
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)

    def start_run(self, name: str, tags: dict[str, str], parent_run_id: str | None = None) -> str:
        """Create a run (a child of ``parent_run_id`` if given) and return its id."""
        all_tags = dict(tags)
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        return str(run.info.run_id)

    def pipeline_run(self, pipeline_run_id: str, tags: dict[str, str]) -> str:
        """The parent MLflow run of one pipeline run, created once and found again by later steps."""
        existing = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`hybridml.pipeline_run_id` = '{pipeline_run_id}' "
            "and tags.`hybridml.role` = 'pipeline'",
            max_results=1,
        )
        if existing:
            return str(existing[0].info.run_id)
        return self.start_run(
            f"pipeline-{pipeline_run_id}",
            {**tags, "hybridml.pipeline_run_id": pipeline_run_id, "hybridml.role": "pipeline"},
        )

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
        except MlflowException as exc:
            raise InvalidInputError(f"MLflow rejected params/metrics for run {run_id}: {exc.message}") from exc

    def log_figure(self, run_id: str, figure: Any, artifact_file: str) -> None:
        """Save a matplotlib figure as a run artifact (shown in the MLflow UI)."""
        self.client.log_figure(run_id, figure, artifact_file)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        """Save text (JSON, Markdown) as a run artifact."""
        self.client.log_text(run_id, text, artifact_file)

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        """Mark a run finished (or FAILED)."""
        self.client.set_terminated(run_id, status=status)
