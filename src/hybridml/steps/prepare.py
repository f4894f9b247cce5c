"""Preprocess step: read the table, check it, infer schema and reference statistics, hash, split."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import pandas as pd

from hybridml.core import approval, data
from hybridml.core.naming import check_model_name
from hybridml.core.schema import FeatureSchema
from hybridml.errors import InvalidInputError, NotFoundError
from hybridml.steps.cluster import check_durable, effective_target

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """What preprocess hands to the next steps besides its files."""

    data_hash: str
    n_rows: int
    n_features: int
    dropped: dict[str, str] = field(default_factory=dict)

    @property
    def dropped_json(self) -> str:
        """``dropped`` as a JSON object (a pipeline output)."""
        return json.dumps(self.dropped)


def read_input(data_uri: str, target: str) -> tuple[pd.DataFrame, str]:
    """The input table and its target column.

    ``""`` (or ``builtin:breast_cancer``) is scikit-learn's bundled table; ``builtin:synthetic_hard`` a noisy one
    that takes the HPO branch. Neither needs a download.
    """
    if data_uri in ("", data.BUILTIN_DATASET, data.BUILTIN_HARD):
        frame, default_target = data.synthetic_hard() if data_uri == data.BUILTIN_HARD else data.builtin_breast_cancer()
        return frame, target or default_target
    if not target:
        raise InvalidInputError("--target is required with --data (the name of the 0/1 label column)")
    from hybridml.adapters import storage

    with tempfile.TemporaryDirectory(prefix="hybridml-data-") as scratch:
        return data.load_table(storage.fetch(data_uri, scratch)), target


def preflight(*, data_uri: str, target: str, drop_columns: str, keep_columns: str, positive_class: str) -> None:
    """What ``run`` checks before any pipeline machinery starts; preprocess runs the same checks again.

    The data URI's scheme and existence; for a local file also its header, the target column, its two
    classes, the positive class and the columns to drop or keep (only the header and the label column are read).

    Raises:
        InvalidInputError: naming the problem.
        NotFoundError: the data does not exist.
    """
    drop = data.parse_columns(drop_columns, "drop_columns")
    keep = data.parse_columns(keep_columns, "keep_columns")
    if data_uri in ("", data.BUILTIN_DATASET, data.BUILTIN_HARD):
        frame, target = read_input(data_uri, target)  # bundled with scikit-learn: read in milliseconds
        data.check_columns([str(c) for c in frame.columns], target, drop, keep)
        data.check_labels(frame[target], target, positive_class or None)
        return
    if not target:
        raise InvalidInputError("--target is required with --data (the name of the 0/1 label column)")
    from hybridml.adapters import storage

    parsed = storage.check_exists(data_uri)
    if parsed.scheme == "s3":
        return  # its content is checked by preprocess, which downloads it anyway
    path = unquote(parsed.path) if parsed.scheme == "file" else data_uri
    data.preflight(path, target, drop=drop, keep=keep, positive_class=positive_class)


def check_against_registered(schema: FeatureSchema, model_name: str, tracking_uri: str) -> None:
    """Refuse data whose columns differ from the latest registered version of ``model_name``."""
    if not model_name or not tracking_uri:
        return
    from hybridml.registry import Registry

    registry = Registry(tracking_uri, user="pipeline")
    try:
        versions = registry.list_versions(model_name)
    except NotFoundError:
        return  # first version of a new model: anything goes
    if not versions:
        return
    latest = max(versions, key=lambda v: v.version)
    with tempfile.TemporaryDirectory(prefix="hybridml-schema-") as scratch:
        registered = registry.download(model_name, latest.version, Path(scratch)).schema
    problems = registered.differences(schema)
    if problems:
        raise InvalidInputError(
            f"data does not match the schema of {model_name} version {latest.version}: "
            + "; ".join(problems)
            + " (use another --model-name for a new model)"
        )


def preprocess(
    *,
    data_uri: str,
    target: str,
    seed: int,
    test_size: float,
    threshold: float,
    model_name: str,
    tracking_uri: str,
    train_path: str,
    valid_path: str,
    test_path: str,
    schema_path: str,
    drop_columns: str = "",
    keep_columns: str = "",
    positive_class: str = "",
    hpo_storage: str | None = None,
    deploy_target: str | None = None,
    deploy_config: str = "",
) -> Prepared:
    """Validate parameters and data, then write the three splits (Parquet) and the schema (JSON).

    Identifier-like columns and ``drop_columns`` are left out of the splits and named in the schema's
    ``dropped``; ``keep_columns`` stay features. Both are a JSON list or a comma list of column names.
    ``positive_class`` is the label scored as 1 (``""``: the second class in sorted order). In a Kubernetes pod,
    the run's tracking URI, HPO storage and deploy target (None: not checked) must outlive the pod
    (:func:`hybridml.steps.cluster.check_durable`): the first step refuses them before anything is written.
    """
    # A cluster run has no CLI to check these first: refuse before reading any data.
    check_durable(
        tracking_uri=tracking_uri,
        hpo_storage=hpo_storage,
        deploy_target=None if deploy_target is None else effective_target(deploy_target, deploy_config),
    )
    if model_name:
        check_model_name(model_name)
    approval.check_threshold("threshold", threshold)
    drop = data.parse_columns(drop_columns, "drop_columns")
    keep = data.parse_columns(keep_columns, "keep_columns")
    frame, target = read_input(data_uri, target)
    schema = data.infer_schema(frame, target, drop=drop, keep=keep, positive_class=positive_class or None)
    detected = {c: r for c, r in schema.dropped.items() if r != data.DROPPED_ON_REQUEST}
    if detected:
        _log.warning("not used as features (identifier-like): %s", "; ".join(f"{c}: {r}" for c, r in detected.items()))
    check_against_registered(schema, model_name, tracking_uri)
    frame = frame.drop(columns=list(schema.dropped))
    parts = data.split(frame, schema, seed=seed, test_size=test_size, valid_size=test_size)
    for part, path in ((parts.train, train_path), (parts.valid, valid_path), (parts.test, test_path)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        part.to_parquet(path, index=False)
    Path(schema_path).parent.mkdir(parents=True, exist_ok=True)
    Path(schema_path).write_text(json.dumps(schema.to_dict(), indent=2))
    return Prepared(
        data_hash=schema.data_hash, n_rows=schema.n_rows, n_features=len(schema.features), dropped=schema.dropped
    )


def load_split(path: str, schema_path: str) -> tuple[pd.DataFrame, FeatureSchema]:
    """Read one split written by :func:`preprocess` and its schema."""
    schema = FeatureSchema.from_dict(json.loads(Path(schema_path).read_text()))
    return pd.read_parquet(path), schema
