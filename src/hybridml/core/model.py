"""Model building, fitting and the on-disk bundle (safe formats only: XGBoost JSON, scikit-learn skops)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hybridml.core.profile import ReferenceProfile
from hybridml.core.schema import FeatureSchema
from hybridml.core.skops_allowlist import ALLOWED_SKOPS_TYPES
from hybridml.errors import InvalidInputError

XGBOOST = "xgboost"
SKLEARN_TYPES = ("hist_gradient_boosting", "random_forest", "logistic_regression")
MODEL_TYPES = (XGBOOST, *SKLEARN_TYPES)

MANIFEST = "hybridml.json"
PROFILE_FILE = "profile.json"
XGB_FILE = "model.json"
SKOPS_FILE = "model.skops"
BUNDLE_FORMAT_VERSION = 1

DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    XGBOOST: {"n_estimators": 200, "max_depth": 4, "learning_rate": 0.1, "subsample": 1.0, "colsample_bytree": 1.0},
    "hist_gradient_boosting": {"max_iter": 200, "learning_rate": 0.1, "max_leaf_nodes": 31},
    "random_forest": {"n_estimators": 200, "max_depth": None, "min_samples_leaf": 1},
    "logistic_regression": {"C": 1.0, "max_iter": 1000},
}


class Classifier(Protocol):
    """What every supported estimator offers."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> Any: ...  # noqa: N803 - sklearn naming

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...  # noqa: N803


def check_model_type(model_type: str) -> str:
    """Return ``model_type`` if supported, else raise naming the choices."""
    if model_type not in MODEL_TYPES:
        raise InvalidInputError(f"unknown model type {model_type!r} (choose from {', '.join(MODEL_TYPES)})")
    return model_type


def build(model_type: str, params: dict[str, Any] | None = None, *, seed: int = 0) -> Classifier:
    """An unfitted estimator of ``model_type`` with defaults overridden by ``params``."""
    check_model_type(model_type)
    merged = {**DEFAULT_PARAMS[model_type], **(params or {})}
    if model_type == XGBOOST:
        import xgboost as xgb

        # nthread=1: steps and HPO trials run side by side on small machines; oversubscription costs more.
        return xgb.XGBClassifier(**merged, random_state=seed, n_jobs=1, eval_metric="auc", tree_method="hist")
    if model_type == "hist_gradient_boosting":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(**merged, random_state=seed)
    if model_type == "random_forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(**merged, random_state=seed, n_jobs=1)
    # Logistic regression needs scaled inputs and cannot take NaN: impute, then scale.
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression(**merged, random_state=seed))


def fit(model_type: str, params: dict[str, Any] | None, X: np.ndarray, y: np.ndarray, *, seed: int = 0) -> Classifier:  # noqa: N803
    """Build and fit; invalid hyper-parameters surface as :class:`InvalidInputError`."""
    model = build(model_type, params, seed=seed)
    try:
        model.fit(X, y)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"cannot train {model_type} with params {params}: {exc}") from exc
    return model


def positive_scores(model: Classifier, X: np.ndarray) -> np.ndarray:  # noqa: N803
    """Probability of the positive class for each row."""
    return np.asarray(model.predict_proba(X))[:, 1]


@dataclass(frozen=True)
class Bundle:
    """A saved model: estimator file + manifest (schema, params, model type) + reference profile.

    ``profile`` is ``None`` only for bundles saved without one (before profiles existed, or by tests).
    """

    path: Path
    model_type: str
    model_file: str
    schema: FeatureSchema
    params: dict[str, Any]
    profile: ReferenceProfile | None = None

    @property
    def flavor(self) -> str:
        """``xgboost`` or ``sklearn``: how the model file is stored."""
        return XGBOOST if self.model_type == XGBOOST else "sklearn"


def save_bundle(
    model: Classifier,
    model_type: str,
    params: dict[str, Any],
    schema: FeatureSchema,
    directory: str | Path,
    *,
    profile: ReferenceProfile | None = None,
) -> Bundle:
    """Write the model in a safe format, its reference profile and its manifest into ``directory`` (created).

    Raises:
        InvalidInputError: ``profile`` describes other features than ``schema``.
    """
    directory = Path(directory)
    if profile is not None:
        _check_profile(profile, schema, directory)
    directory.mkdir(parents=True, exist_ok=True)
    if model_type == XGBOOST:
        model_file = XGB_FILE
        model.get_booster().save_model(str(directory / model_file))  # type: ignore[attr-defined]
    else:
        import skops.io as sio

        model_file = SKOPS_FILE
        sio.dump(model, directory / model_file)
    manifest = {
        "format_version": BUNDLE_FORMAT_VERSION,
        "model_type": model_type,
        "model_file": model_file,
        "params": params,
        "schema": schema.to_dict(),
    }
    if profile is not None:
        (directory / PROFILE_FILE).write_text(json.dumps(profile.to_dict(), indent=2))
    # The manifest is written last: a directory with a manifest is a complete bundle.
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return Bundle(
        path=directory, model_type=model_type, model_file=model_file, schema=schema, params=params, profile=profile
    )


def _check_profile(profile: ReferenceProfile, schema: FeatureSchema, directory: Path) -> None:
    profiled = set(profile.numeric) | set(profile.categorical)
    if profiled != set(schema.names):
        raise InvalidInputError(
            f"reference profile in {directory} describes features {sorted(profiled)}, the schema has {schema.names}"
        )


def read_profile(directory: str | Path) -> ReferenceProfile | None:
    """The bundle's reference profile (``profile.json``), or ``None`` when the bundle has none.

    Raises:
        InvalidInputError: the file is not JSON or not a valid profile (the message names the field).
    """
    path = Path(directory) / PROFILE_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"malformed reference profile {path}: {exc}") from exc
    try:
        return ReferenceProfile.from_dict(raw)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{exc.message} ({path})") from exc


def read_bundle(directory: str | Path) -> Bundle:
    """Read and validate a bundle's manifest (does not load the estimator)."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise InvalidInputError(f"not a hybridml model: {manifest_path} is missing")
    try:
        raw = json.loads(manifest_path.read_text())
        model_type = check_model_type(str(raw["model_type"]))
        model_file = str(raw["model_file"])
        params = dict(raw.get("params", {}))
        schema = FeatureSchema.from_dict(raw["schema"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InvalidInputError(f"malformed model manifest {manifest_path}: {exc}") from exc
    expected = XGB_FILE if model_type == XGBOOST else SKOPS_FILE
    if model_file != expected or not (directory / model_file).is_file():
        # Only the two safe formats are ever loaded; a manifest cannot point at a pickle.
        raise InvalidInputError(f"model file {model_file!r} in {directory} is missing or not an allowed format")
    profile = read_profile(directory)
    if profile is not None:
        _check_profile(profile, schema, directory)
    return Bundle(
        path=directory, model_type=model_type, model_file=model_file, schema=schema, params=params, profile=profile
    )


def _vetted_skops_types(content: bytes, model_type: str, path: Path) -> list[str]:
    """Types of a skops file that skops does not trust by default, once each is found on the exact allow-list.

    Only reads the file's schema: skops builds its node tree without importing or constructing anything,
    so a refused file runs no code.
    """
    import skops.io as sio

    allowed = ALLOWED_SKOPS_TYPES.get(model_type)
    if allowed is None:
        raise InvalidInputError(f"model type {model_type!r} is not stored as a skops file ({path})")
    try:
        found = sio.get_untrusted_types(data=content)
    except Exception as exc:  # zip, JSON and schema errors of many types all mean "not a skops file we can read"
        raise InvalidInputError(f"model file {path} is not a readable skops file: {exc}") from exc
    # An exact set of names, never a prefix: "builtins." would also admit builtins.eval.
    refused = [name for name in found if name not in allowed]
    if refused:
        raise InvalidInputError(f"model file {path} contains types that are not allowed: {refused}")
    return found


def trusted_skops_types(path: str | Path, model_type: str) -> list[str]:
    """The ``trusted`` list to load the skops file at ``path`` with: every type in it on the allow-list.

    The allow-list (:mod:`hybridml.core.skops_allowlist`) is generated from the models the project trains.
    Pass the result wherever skops types are trusted (``skops.io.load``, MLflow's ``skops_trusted_types``).

    Raises:
        InvalidInputError: the file holds a type not allowed for ``model_type``, or is not a skops file.
    """
    path = Path(path)
    return _vetted_skops_types(path.read_bytes(), model_type, path)


def load_estimator(bundle: Bundle) -> Classifier:
    """Load the estimator of a bundle; a skops file is loaded only if every type in it is on the allow-list.

    Raises:
        InvalidInputError: the skops file holds a type not allowed for the bundle's model type (refused before
            anything in it is constructed), or cannot be read.
    """
    path = bundle.path / bundle.model_file
    if bundle.model_type == XGBOOST:
        import xgboost as xgb

        model = xgb.XGBClassifier()
        model.load_model(str(path))
        return model
    import skops.io as sio

    # Read once: the bytes checked are the bytes loaded, even if the file is replaced in between.
    content = path.read_bytes()
    trusted = _vetted_skops_types(content, bundle.model_type, path)
    try:
        return sio.loads(content, trusted=trusted)
    except Exception as exc:  # a schema that parses but does not construct: a corrupt or hand-made file
        raise InvalidInputError(f"cannot load model file {path}: {exc}") from exc
