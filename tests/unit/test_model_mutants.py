"""Model building and bundle behaviour the mutation run (issue 12) found unasserted: parameters reaching the
estimator, the seed, every manifest field, every refusal of read_bundle/read_profile, and skops refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from hybridml.core import data, model
from hybridml.core.profile import build_profile
from hybridml.core.schema import FeatureSchema
from hybridml.errors import InvalidInputError

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def problem() -> tuple[pd.DataFrame, FeatureSchema, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=120), "b": rng.normal(size=120)})
    frame.loc[::9, "b"] = np.nan
    frame["y"] = np.where(frame["a"] + rng.normal(scale=0.7, size=120) > 0, "p", "n")
    schema = data.infer_schema(frame, "y")
    return frame, schema, data.encode_features(frame, schema), data.encode_labels(frame, schema)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory, problem: tuple) -> dict[str, Path]:
    frame, schema, X, y = problem
    root = tmp_path_factory.mktemp("bundles")
    made = {}
    for model_type, params in (("xgboost", {"n_estimators": 5}), ("logistic_regression", {"C": 0.5})):
        fitted = model.fit(model_type, params, X, y)
        profile = build_profile(frame, schema, model.positive_scores(fitted, X))
        made[model_type] = model.save_bundle(
            fitted, model_type, params, schema, root / model_type, profile=profile
        ).path
    return made


def copy(bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(bundle, target)
    return target


def refusal(call: object, *args: object) -> str:
    with pytest.raises(InvalidInputError) as caught:
        call(*args)  # type: ignore[operator]
    return str(caught.value)


# ------------------------------------------------------------------------------------------------ building


def test_unknown_model_type_message_lists_every_choice() -> None:
    assert refusal(model.check_model_type, "svm") == (
        "unknown model type 'svm' (choose from xgboost, hist_gradient_boosting, random_forest, logistic_regression)"
    )
    assert all(model.check_model_type(t) == t for t in model.MODEL_TYPES)


@pytest.mark.parametrize("model_type", model.MODEL_TYPES)
def test_defaults_and_given_params_reach_the_estimator_with_the_seed(model_type: str) -> None:
    defaults = model.build(model_type, seed=11).get_params()
    overrides: dict[str, dict[str, Any]] = {
        "xgboost": {"max_depth": 2},
        "hist_gradient_boosting": {"max_leaf_nodes": 7},
        "random_forest": {"min_samples_leaf": 3},
        "logistic_regression": {"C": 0.25},
    }
    override = overrides[model_type]
    given = model.build(model_type, override, seed=11).get_params()
    prefix = "logisticregression__" if model_type == "logistic_regression" else ""
    for key, value in model.DEFAULT_PARAMS[model_type].items():
        assert defaults[prefix + key] == value
        assert given[prefix + key] == override.get(key, value)
    assert defaults[prefix + "random_state"] == 11
    assert model.build(model_type, None).get_params()[prefix + "random_state"] == 0


def test_tree_models_run_on_one_thread() -> None:
    # Steps and HPO trials run side by side on small machines; each estimator must not take every core.
    assert model.build("xgboost").get_params()["n_jobs"] == 1
    assert model.build("random_forest").get_params()["n_jobs"] == 1


def test_logistic_regression_takes_missing_values(problem: tuple) -> None:
    _, _, X, y = problem
    assert np.isnan(X).any()
    fitted = model.fit("logistic_regression", {}, X, y)
    scores = model.positive_scores(fitted, X)
    assert scores.shape == (len(X),) and np.all((scores >= 0) & (scores <= 1))


def test_positive_scores_are_the_second_column() -> None:
    class Fixed:
        def fit(self, X: np.ndarray, y: np.ndarray) -> None: ...

        def predict_proba(self, X: np.ndarray) -> np.ndarray:
            return np.array([[0.9, 0.1], [0.3, 0.7]])

    assert model.positive_scores(Fixed(), np.zeros((2, 1))).tolist() == [0.1, 0.7]


def test_training_failures_name_the_model_type_and_params() -> None:
    text = refusal(model.fit, "logistic_regression", {"C": -1.0}, np.zeros((10, 2)), np.array([0, 1] * 5))
    assert text.startswith("cannot train logistic_regression with params {'C': -1.0}: ")


@pytest.mark.parametrize("model_type", ["xgboost", "random_forest"])
def test_the_seed_decides_the_model(problem: tuple, model_type: str) -> None:
    _, _, X, y = problem
    params = {"n_estimators": 10, "subsample": 0.5, "colsample_bytree": 0.5} if model_type == "xgboost" else {
        "n_estimators": 10}  # fmt: skip
    first = model.positive_scores(model.fit(model_type, params, X, y, seed=1), X)
    np.testing.assert_array_equal(first, model.positive_scores(model.fit(model_type, params, X, y, seed=1), X))
    assert not np.array_equal(first, model.positive_scores(model.fit(model_type, params, X, y, seed=2), X))


# ------------------------------------------------------------------------------------------------- bundles


KINDS = [("xgboost", "model.json", "xgboost"), ("logistic_regression", "model.skops", "sklearn")]


@pytest.mark.parametrize(("model_type", "file", "flavor"), KINDS)
def test_saved_bundle_fields_and_manifest(
    bundles: dict[str, Path], problem: tuple, model_type: str, file: str, flavor: str
) -> None:
    _, schema, _, _ = problem
    path = bundles[model_type]
    manifest = json.loads((path / "hybridml.json").read_text())
    params = {"n_estimators": 5} if model_type == "xgboost" else {"C": 0.5}
    assert manifest == {
        "format_version": 1,
        "model_type": model_type,
        "model_file": file,
        "params": params,
        "schema": schema.to_dict(),
    }
    bundle = model.read_bundle(path)
    assert (bundle.path, bundle.model_type, bundle.model_file, bundle.params) == (path, model_type, file, params)
    assert bundle.schema == schema and bundle.flavor == flavor
    assert bundle.profile is not None and bundle.profile == model.read_profile(path)
    assert json.loads((path / "profile.json").read_text()) == bundle.profile.to_dict()


def test_save_returns_what_read_gives(problem: tuple, tmp_path: Path) -> None:
    _, schema, X, y = problem
    fitted = model.fit("xgboost", {"n_estimators": 3}, X, y)
    saved = model.save_bundle(fitted, "xgboost", {"n_estimators": 3}, schema, tmp_path / "deep" / "er")
    assert saved == model.read_bundle(tmp_path / "deep" / "er")
    assert saved.profile is None and not (tmp_path / "deep" / "er" / "profile.json").exists()


def test_a_profile_of_other_features_is_refused_on_save_and_on_read(
    bundles: dict[str, Path], problem: tuple, tmp_path: Path
) -> None:
    frame, schema, X, y = problem
    other = data.infer_schema(frame.drop(columns=["b"]), "y")
    profile = build_profile(frame, other, np.full(len(frame), 0.5))
    fitted = model.fit("xgboost", {"n_estimators": 3}, X, y)
    with pytest.raises(InvalidInputError) as caught:
        model.save_bundle(fitted, "xgboost", {}, schema, tmp_path / "s", profile=profile)
    text = str(caught.value)
    assert text == f"reference profile in {tmp_path / 's'} describes features ['a'], the schema has ['a', 'b']"
    assert not (tmp_path / "s").exists()  # refused before anything is written
    broken = copy(bundles["xgboost"], tmp_path)
    (broken / "profile.json").write_text(json.dumps(profile.to_dict()))
    assert refusal(model.read_bundle, broken) == (
        f"reference profile in {broken} describes features ['a'], the schema has ['a', 'b']"
    )


def test_profile_refusals_name_the_file(bundles: dict[str, Path], tmp_path: Path) -> None:
    broken = copy(bundles["xgboost"], tmp_path)
    path = broken / "profile.json"
    path.write_text("{not json")
    assert refusal(model.read_profile, broken).startswith(f"malformed reference profile {path}: ")
    path.write_bytes(b"\xff\xfe")
    assert refusal(model.read_profile, broken).startswith(f"malformed reference profile {path}: ")
    path.write_text(json.dumps({"format_version": 1}))
    text = refusal(model.read_profile, broken)
    assert text.startswith("malformed reference profile: ") and text.endswith(f" ({path})")
    path.unlink()
    assert model.read_profile(broken) is None
    assert model.read_bundle(broken).profile is None


def test_manifest_refusals(bundles: dict[str, Path], tmp_path: Path) -> None:
    broken = copy(bundles["xgboost"], tmp_path)
    manifest_path = broken / "hybridml.json"
    manifest = json.loads(manifest_path.read_text())
    for bad in ("{not json", json.dumps({k: v for k, v in manifest.items() if k != "model_type"}),
                json.dumps({k: v for k, v in manifest.items() if k != "model_file"}),
                json.dumps({k: v for k, v in manifest.items() if k != "schema"}),
                json.dumps({**manifest, "params": 5})):  # fmt: skip
        manifest_path.write_text(bad)
        assert refusal(model.read_bundle, broken).startswith(f"malformed model manifest {manifest_path}: ")
    manifest_path.write_text(json.dumps({**manifest, "schema": 5}))
    assert refusal(model.read_bundle, broken).startswith("malformed feature schema: ")
    manifest_path.write_text(json.dumps({**manifest, "model_type": "svm"}))
    assert refusal(model.read_bundle, broken).startswith("unknown model type 'svm'")
    manifest_path.write_text(json.dumps({k: v for k, v in manifest.items() if k != "params"}))
    assert model.read_bundle(broken).params == {}
    for name in ("model.skops", "../model.json"):
        manifest_path.write_text(json.dumps({**manifest, "model_file": name}))
        assert refusal(model.read_bundle, broken) == (
            f"model file {name!r} in {broken} is missing or not an allowed format"
        )
    manifest_path.write_text(json.dumps(manifest))
    (broken / "model.json").unlink()
    assert (
        refusal(model.read_bundle, broken) == f"model file 'model.json' in {broken} is missing or not an allowed format"
    )
    manifest_path.unlink()
    assert refusal(model.read_bundle, broken) == f"not a hybridml model: {manifest_path} is missing"


def test_a_directory_named_like_the_manifest_is_not_a_bundle(tmp_path: Path) -> None:
    (tmp_path / "hybridml.json").mkdir()
    assert refusal(model.read_bundle, tmp_path) == f"not a hybridml model: {tmp_path / 'hybridml.json'} is missing"


def test_skops_refusals_name_the_file(bundles: dict[str, Path], tmp_path: Path) -> None:
    path = bundles["logistic_regression"] / "model.skops"
    assert refusal(model.trusted_skops_types, path, "xgboost") == (
        f"model type 'xgboost' is not stored as a skops file ({path})"
    )
    import skops.io as sio

    from hybridml.core.skops_allowlist import ALLOWED_SKOPS_TYPES

    refused = [t for t in sio.get_untrusted_types(file=path) if t not in ALLOWED_SKOPS_TYPES["random_forest"]]
    assert refused
    assert refusal(model.trusted_skops_types, path, "random_forest") == (
        f"model file {path} contains types that are not allowed: {refused}"
    )


def test_a_skops_file_that_does_not_construct_is_refused(bundles: dict[str, Path], tmp_path: Path) -> None:
    import zipfile

    broken = copy(bundles["logistic_regression"], tmp_path)
    path = broken / "model.skops"
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    schema = json.loads(files["schema.json"])
    schema["content"] = {"broken": True}
    files["schema.json"] = json.dumps(schema).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    text = refusal(model.load_estimator, model.read_bundle(broken))
    assert text.startswith(f"cannot load model file {path}: ") or text.startswith(f"model file {path} ")


def test_loaded_estimators_score_like_the_saved_ones(bundles: dict[str, Path], problem: tuple) -> None:
    _, _, X, y = problem
    for model_type, params in (("xgboost", {"n_estimators": 5}), ("logistic_regression", {"C": 0.5})):
        loaded = model.load_estimator(model.read_bundle(bundles[model_type]))
        np.testing.assert_allclose(
            model.positive_scores(loaded, X), model.positive_scores(model.fit(model_type, params, X, y), X), atol=1e-6
        )
