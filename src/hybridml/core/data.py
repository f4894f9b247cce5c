"""Tabular data in: load, validate, infer the schema, hash for lineage, split deterministically."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from hybridml.core.schema import BOOLEAN, CATEGORY, INTEGER, NUMERIC, FeatureSchema, FeatureSpec
from hybridml.errors import InvalidInputError, NotFoundError

MIN_ROWS_PER_CLASS = 5
BUILTIN_DATASET = "builtin:breast_cancer"
BUILTIN_HARD = "builtin:synthetic_hard"

DROPPED_ON_REQUEST = "dropped on request"
# Names that say "row number" or "identifier" (compared in lower case); pandas writes its index as "Unnamed: 0".
_ID_NAMES = frozenset({"id", "rownames", "rowname", "index", "row", "rowid", "row_id", "row_number", "rownum"})
_ID_NAME = re.compile(r"^(unnamed: \d+|.+[_ ]id)$")


def load_table(path: str | Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet file (only ``columns``, when given) into a DataFrame.

    Raises:
        NotFoundError: the file does not exist.
        InvalidInputError: unknown extension, unreadable content or an empty table.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".txt"):
            frame = pd.read_csv(path, usecols=list(columns) if columns is not None else None)
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path, columns=list(columns) if columns is not None else None)
        else:
            raise InvalidInputError(f"unsupported data format {suffix!r} for {path} (use .csv or .parquet)")
    except pd.errors.EmptyDataError as exc:
        raise InvalidInputError(f"data file is empty: {path}") from exc
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise InvalidInputError(f"cannot read {path}: {exc}") from exc
    if frame.empty:
        raise InvalidInputError(f"data file has no rows: {path}")
    return frame


def builtin_breast_cancer() -> tuple[pd.DataFrame, str]:
    """scikit-learn's bundled breast-cancer table (no download) and its target column name."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.copy()
    # Column names with spaces are legal but awkward in URLs and V1 instances; keep them stable and plain.
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    return frame, "target"


def synthetic_hard(seed: int = 3, n_rows: int = 800) -> tuple[pd.DataFrame, str]:
    """A noisy synthetic table whose baseline XGBoost ROC AUC is about 0.66: it takes the HPO branch."""
    from sklearn.datasets import make_classification

    X, y = make_classification(  # noqa: N806 - sklearn naming
        n_samples=n_rows, n_features=10, n_informative=3, n_redundant=0, flip_y=0.4, class_sep=0.6, random_state=seed
    )
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    frame["label"] = y
    return frame, "label"


def content_hash(frame: pd.DataFrame) -> str:
    """SHA-256 of the table's content and column layout, independent of file format (CSV or Parquet)."""
    digest = hashlib.sha256()
    digest.update("\x1f".join(f"{c}:{t}" for c, t in zip(frame.columns, frame.dtypes, strict=True)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def _feature_spec(name: str, column: pd.Series) -> FeatureSpec:
    nan_fraction = float(column.isna().mean())
    if nan_fraction == 1.0:
        raise InvalidInputError(f"column {name!r} contains only missing values")
    if pd.api.types.is_bool_dtype(column):
        dtype = BOOLEAN
    elif pd.api.types.is_integer_dtype(column):
        dtype = INTEGER
    elif pd.api.types.is_numeric_dtype(column):
        dtype = NUMERIC
    else:
        categories = sorted(str(v) for v in column.dropna().unique())
        return FeatureSpec(
            name=name,
            dtype=CATEGORY,
            nullable=nan_fraction > 0,
            nan_fraction=nan_fraction,
            categories=tuple(categories),
        )
    values = column.dropna().astype(float)
    return FeatureSpec(
        name=name,
        dtype=dtype,
        nullable=nan_fraction > 0,
        min=float(values.min()),
        max=float(values.max()),
        mean=float(values.mean()),
        std=float(values.std(ddof=0)),
        nan_fraction=nan_fraction,
        quantiles=tuple(float(q) for q in np.quantile(values, np.linspace(0.1, 0.9, 9))),
    )


def parse_columns(text: str, what: str) -> tuple[str, ...]:
    """Column names given as a JSON list (``'["a", "b"]'``) or a comma list (``"a, b"``); ``""`` is none.

    Raises:
        InvalidInputError: a JSON value that is not a list of strings.
    """
    text = text.strip()
    if not text:
        return ()
    if text.startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{what} must be a JSON list of column names or a comma list: {exc}") from exc
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InvalidInputError(f"{what} must be a JSON list of column names (strings), got {text[:80]}")
        return tuple(dict.fromkeys(names))
    return tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))


def _is_id_name(name: str) -> bool:
    lowered = name.strip().lower()
    return lowered in _ID_NAMES or bool(_ID_NAME.match(lowered))


def identifier_reason(name: str, column: pd.Series) -> str | None:
    """Why ``column`` looks like a row identifier rather than a feature, or ``None`` if it does not.

    - text whose values are all different (a passenger's name, a ticket code): a category seen once per row
      teaches a model nothing and every new row is an unknown category;
    - integers that number the rows: all different and consecutive (``1..n``, ``0..n-1``, in any order);
    - integers all different in a column named like an identifier (``ID``, ``rownames``, ``customer_id``).

    Float columns are never identifiers: a continuous feature is unique per row too. Booleans never are.
    """
    present = column.dropna()
    n_rows, n_present = len(column), len(present)
    if pd.api.types.is_bool_dtype(column) or n_present < 2:
        return None
    if pd.api.types.is_integer_dtype(column):
        if n_present != n_rows or not present.is_unique:
            return None
        low, high = int(present.min()), int(present.max())
        if high - low == n_rows - 1:
            return f"row number: consecutive integers {low}..{high}, one per row"
        if _is_id_name(name):
            return f"identifier: named like an ID and its {n_rows} integers are all different"
        return None
    if pd.api.types.is_numeric_dtype(column):
        return None
    # Text: mostly-empty columns are not identifiers, they are sparse features.
    if n_present * 2 >= n_rows and present.astype(str).is_unique:
        return f"identifier: text unique per row ({n_present} rows, each with a different value)"
    return None


def find_identifiers(frame: pd.DataFrame, target: str) -> dict[str, str]:
    """Identifier-like columns of ``frame`` (besides ``target``) and why, in column order."""
    found = {}
    for name in frame.columns:
        if name == target:
            continue
        reason = identifier_reason(str(name), frame[name])
        if reason is not None:
            found[str(name)] = reason
    return found


def read_header(path: str | Path) -> list[str]:
    """The column names of a CSV or Parquet file, read without loading its rows.

    Raises:
        NotFoundError: the file does not exist.
        InvalidInputError: unknown extension or unreadable content.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return [str(name) for name in pq.read_schema(path).names]
        if suffix in (".csv", ".txt"):
            return [str(name) for name in pd.read_csv(path, nrows=0).columns]
    except pd.errors.EmptyDataError as exc:
        raise InvalidInputError(f"data file is empty: {path}") from exc
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise InvalidInputError(f"cannot read {path}: {exc}") from exc
    raise InvalidInputError(f"unsupported data format {suffix!r} for {path} (use .csv or .parquet)")


def check_columns(columns: Sequence[str], target: str, drop: Sequence[str] = (), keep: Sequence[str] = ()) -> None:
    """Refuse a header without the target, with duplicate names, or with ``drop``/``keep`` names it lacks.

    Raises:
        InvalidInputError: naming the problem (and the first columns, so a typo is easy to see).
    """
    columns = [str(c) for c in columns]
    shown = ", ".join(columns[:10]) + (" ..." if len(columns) > 10 else "")
    if target not in columns:
        raise InvalidInputError(f"target column {target!r} not found (columns: {shown})")
    if len(set(columns)) != len(columns):
        raise InvalidInputError("table has duplicate column names")
    for what, names in (("drop", drop), ("keep", keep)):
        for name in names:
            if name not in columns:
                raise InvalidInputError(f"column {name!r} to {what} is not in the table (columns: {shown})")
            if name == target:
                raise InvalidInputError(f"column {name!r} to {what} is the target column")
    both = [n for n in drop if n in keep]
    if both:
        raise InvalidInputError(f"columns {both} are both to drop and to keep")


def check_labels(labels: pd.Series, target: str, positive_class: str | None = None) -> tuple[str, str]:
    """The two classes of a target column as ``(negative, positive)``, once the labels are usable.

    Raises:
        InvalidInputError: missing labels, not exactly two classes, too few rows of a class, or a
            ``positive_class`` that is not one of the two.
    """
    if labels.isna().any():
        raise InvalidInputError(f"target column {target!r} has {int(labels.isna().sum())} missing values")
    classes = _classes(labels, target, positive_class)
    counts = labels.astype(str).value_counts()
    if int(counts.min()) < MIN_ROWS_PER_CLASS:
        raise InvalidInputError(
            f"target column {target!r} has only {int(counts.min())} rows of class {counts.idxmin()!r};"
            f" at least {MIN_ROWS_PER_CLASS} per class are needed"
        )
    return classes


def preflight(
    path: str | Path, target: str, *, drop: Sequence[str] = (), keep: Sequence[str] = (), positive_class: str = ""
) -> tuple[str, str]:
    """The checks of :func:`infer_schema` that need only the header and the label column, on a local file.

    A run calls this before any pipeline machinery starts, so a wrong column is reported at once; the
    preprocess step still runs the full checks (a cluster run has no such pre-flight).

    Raises:
        NotFoundError: the file does not exist.
        InvalidInputError: as :func:`check_columns` and :func:`check_labels`.
    """
    check_columns(read_header(path), target, drop, keep)
    return check_labels(load_table(path, columns=[target])[target], target, positive_class or None)


def _classes(labels: pd.Series, target: str, positive_class: str | None) -> tuple[str, str]:
    classes = sorted(labels.astype(str).unique())
    if len(classes) != 2:
        raise InvalidInputError(
            f"target column {target!r} must have exactly 2 classes, found {len(classes)}: {classes[:5]}"
        )
    if positive_class is None or positive_class == "":
        return classes[0], classes[1]  # the default: the second class in sorted order is positive
    if positive_class not in classes:
        raise InvalidInputError(
            f"positive class {positive_class!r} is not a class of target column {target!r}:"
            f" choose {classes[0]!r} or {classes[1]!r}"
        )
    negative = classes[0] if positive_class == classes[1] else classes[1]
    return negative, positive_class


def infer_schema(
    frame: pd.DataFrame,
    target: str,
    *,
    drop: Iterable[str] = (),
    keep: Iterable[str] = (),
    positive_class: str | None = None,
) -> FeatureSchema:
    """Check a table is a usable binary-classification problem and describe it.

    Identifier-like columns (:func:`identifier_reason`) are left out of the features and named in the schema's
    ``dropped`` with the reason, as are the columns in ``drop``; columns in ``keep`` stay features whatever they
    look like. ``data_hash`` is the hash of the whole table as given, dropped columns included.

    Args:
        frame: the table, label included.
        target: the label column (two classes).
        drop: columns to leave out of the features.
        keep: columns to keep as features even if they look like identifiers.
        positive_class: the class whose probability the model scores (label 1); default: the second class in
            sorted order.

    Raises:
        InvalidInputError: naming the problem (no rows, missing/non-binary target, all-NaN column, a column to
            drop or keep that is not in the table, a positive class that is not one of the two, ...).
    """
    drop, keep = tuple(drop), tuple(keep)
    if frame.empty:
        raise InvalidInputError("table has no rows")
    check_columns([str(c) for c in frame.columns], target, drop, keep)
    classes = check_labels(frame[target], target, positive_class)
    detected = {c: r for c, r in find_identifiers(frame, target).items() if c not in keep}
    dropped = {
        str(c): (DROPPED_ON_REQUEST if str(c) in drop else detected[str(c)])
        for c in frame.columns
        if str(c) in drop or str(c) in detected
    }
    features = tuple(_feature_spec(str(c), frame[c]) for c in frame.columns if c != target and str(c) not in dropped)
    if not features:
        left_out = f" (left out: {', '.join(dropped)}; keep one to train on it)" if dropped else ""
        raise InvalidInputError(f"table has no feature columns besides the target{left_out}")
    return FeatureSchema(
        target=target,
        classes=classes,
        features=features,
        n_rows=int(frame.shape[0]),
        data_hash=content_hash(frame),
        dropped=dropped,
    )


def encode_labels(frame: pd.DataFrame, schema: FeatureSchema) -> np.ndarray:
    """Target as 0/1, where 1 is the schema's positive class (``classes[1]``)."""
    return (frame[schema.target].astype(str) == schema.classes[1]).to_numpy(dtype=np.int32)


def encode_features(frame: pd.DataFrame, schema: FeatureSchema) -> np.ndarray:
    """Features as a float32 matrix in schema order; categories become their index, unknown ones NaN."""
    columns = []
    for spec in schema.features:
        if spec.name not in frame.columns:
            raise InvalidInputError(f"missing feature column {spec.name!r}")
        col = frame[spec.name]
        if spec.dtype == CATEGORY:
            index = {c: i for i, c in enumerate(spec.categories)}
            columns.append(col.map(lambda v, index=index: index.get(str(v), np.nan)).to_numpy(dtype=np.float32))
        else:
            try:
                columns.append(pd.to_numeric(col, errors="raise").to_numpy(dtype=np.float32))
            except (ValueError, TypeError) as exc:
                raise InvalidInputError(f"feature column {spec.name!r} is not numeric: {exc}") from exc
    return np.column_stack(columns) if columns else np.empty((len(frame), 0), dtype=np.float32)


@dataclass(frozen=True)
class Split:
    """Train / validation / test partitions of one table."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame


def split(
    frame: pd.DataFrame, schema: FeatureSchema, *, seed: int, test_size: float = 0.2, valid_size: float = 0.2
) -> Split:
    """Stratified, seeded split: the same table and seed always give the same rows in each part."""
    for name, value in (("test_size", test_size), ("valid_size", valid_size)):
        if not 0.0 < value < 0.5:
            raise InvalidInputError(f"{name} must be in (0, 0.5), got {value}")
    labels = frame[schema.target].astype(str)
    rest, test = train_test_split(frame, test_size=test_size, random_state=seed, stratify=labels)
    train, valid = train_test_split(
        rest, test_size=valid_size / (1 - test_size), random_state=seed, stratify=labels.loc[rest.index]
    )
    return Split(
        train=train.reset_index(drop=True), valid=valid.reset_index(drop=True), test=test.reset_index(drop=True)
    )
