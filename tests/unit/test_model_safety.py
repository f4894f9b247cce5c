"""Model files cannot run code: the exact skops allow-list, its generator, and refusals of crafted payloads."""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio

import hybridml
from hybridml.core import data, model, skops_types
from hybridml.core.skops_allowlist import ALLOWED_SKOPS_TYPES
from hybridml.errors import InvalidInputError
from tests.skops_exploits import PAYLOADS, PLACES, PROVE_SCRIPT, bad_bundle, craft

SRC = Path(hybridml.__file__).parent


@pytest.fixture(scope="module")
def good_bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small valid bundle per scikit-learn model type, trained on the breast-cancer table."""
    frame, target = data.builtin_breast_cancer()
    schema = data.infer_schema(frame, target)
    X, y = data.encode_features(frame, schema), data.encode_labels(frame, schema)
    root = tmp_path_factory.mktemp("good")
    small = {"hist_gradient_boosting": {"max_iter": 5}, "random_forest": {"n_estimators": 3}, "logistic_regression": {}}
    return {
        model_type: model.save_bundle(
            model.fit(model_type, params, X, y), model_type, params, schema, root / model_type
        ).path
        for model_type, params in small.items()
    }


# ---------------------------------------------------------------- the allow-list is generated and exact


def test_allow_list_is_exactly_the_types_the_supported_models_contain() -> None:
    round_trips: list[str] = []
    refused: list[str] = []

    def round_trip(bundle: model.Bundle, table: str, fitted: model.Classifier, X: np.ndarray) -> None:
        # Every model the generator trains also loads back through the guarded path and predicts the same.
        try:
            loaded = model.load_estimator(model.read_bundle(bundle.path))
        except InvalidInputError as exc:  # reported after the type comparison, whose message says what to do
            refused.append(str(exc))
            return
        np.testing.assert_array_equal(loaded.predict_proba(X), fitted.predict_proba(X))
        round_trips.append(f"{bundle.model_type} on {table}")

    observed = skops_types.observed_types(on_model=round_trip)
    regenerate = f"run `{skops_types.WRITE_COMMAND}` and review the difference"
    assert set(observed) == set(model.SKLEARN_TYPES)
    for model_type in model.SKLEARN_TYPES:
        new = sorted(set(observed[model_type]) - set(ALLOWED_SKOPS_TYPES[model_type]))
        assert not new, f"{model_type} models now contain skops types missing from the allow-list: {new}; {regenerate}"
        unused = sorted(set(ALLOWED_SKOPS_TYPES[model_type]) - set(observed[model_type]))
        assert not unused, f"the allow-list for {model_type} has types no model contains: {unused}; {regenerate}"
    assert observed == ALLOWED_SKOPS_TYPES  # same order too: the file is exactly what the generator writes
    assert refused == []
    assert len(round_trips) == 3 * 3 * 2  # tables x model types x parameter sets


def test_allow_list_covers_only_supported_types_and_holds_full_names() -> None:
    assert set(ALLOWED_SKOPS_TYPES) == set(model.SKLEARN_TYPES)
    for names in ALLOWED_SKOPS_TYPES.values():
        assert names == tuple(sorted(set(names)))
        # Full dotted names of classes, never a bare module or a prefix.
        assert all(re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_]\w*)+", name) for name in names), names
    assert not {"builtins.eval", "builtins.exec", "os.system"} & {n for v in ALLOWED_SKOPS_TYPES.values() for n in v}


def test_generated_file_is_what_the_generator_renders() -> None:
    text = skops_types.ALLOWLIST_FILE.read_text()
    namespace: dict[str, object] = {}
    exec(compile(skops_types.render(ALLOWED_SKOPS_TYPES), "rendered", "exec"), namespace)
    assert namespace["ALLOWED_SKOPS_TYPES"] == ALLOWED_SKOPS_TYPES
    # Only the line naming the library versions may differ (after an upgrade, before a rerun).
    differ = [
        (a, b)
        for a, b in zip(text.splitlines(), skops_types.render(ALLOWED_SKOPS_TYPES).splitlines(), strict=True)
        if a != b
    ]
    assert all(a.startswith("# Written by") for a, _ in differ), differ


# ---------------------------------------------------------------- the payloads are real exploits


def test_crafted_payloads_run_code_when_their_types_are_trusted(good_bundles: dict[str, Path], tmp_path: Path) -> None:
    """Without the allow-list (trusting what get_untrusted_types reports) every crafted file runs its payload."""
    files, markers = [], []
    for model_type, bundle_dir in good_bundles.items():
        for kind in PAYLOADS:
            for place in PLACES:
                marker = tmp_path / f"ran-{model_type}-{kind}-{place}"
                files.append(
                    craft(bundle_dir / model.SKOPS_FILE, tmp_path / f"{marker.name}.skops", kind, place, marker)
                )
                markers.append(marker)
    result = subprocess.run(
        [sys.executable, "-c", PROVE_SCRIPT, *map(str, files)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert [m.name for m in markers if not m.is_file()] == []
    assert {m.read_text().strip() for m in markers} == set(PAYLOADS)


# ---------------------------------------------------------------- load_estimator refuses them and runs nothing


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("kind", list(PAYLOADS))
@pytest.mark.parametrize("model_type", model.SKLEARN_TYPES)
def test_load_estimator_refuses_every_payload_before_constructing_anything(
    good_bundles: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    model_type: str,
    kind: str,
    place: str,
) -> None:
    marker = tmp_path / "ran"
    bad = bad_bundle(good_bundles[model_type], tmp_path / "bad", kind, place, marker)

    def no_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("skops was asked to construct a refused file")

    monkeypatch.setattr(sio, "load", no_load)
    monkeypatch.setattr(sio, "loads", no_load)
    path = bad / model.SKOPS_FILE
    expected = f"model file {path} contains types that are not allowed: {[PAYLOADS[kind]]}"
    with pytest.raises(InvalidInputError) as refused:
        model.load_estimator(model.read_bundle(bad))
    assert str(refused.value) == expected
    assert "\n" not in str(refused.value)
    with pytest.raises(InvalidInputError) as refused_again:
        model.trusted_skops_types(path, model_type)
    assert str(refused_again.value) == expected
    assert not marker.exists()


def test_a_type_allowed_for_one_model_type_is_refused_for_another(
    good_bundles: dict[str, Path], tmp_path: Path
) -> None:
    # A bundle that says random_forest but holds a HistGradientBoosting file: TreePredictor is not a forest's type.
    bundle = model.read_bundle(good_bundles["random_forest"])
    (tmp_path / model.SKOPS_FILE).write_bytes((good_bundles["hist_gradient_boosting"] / model.SKOPS_FILE).read_bytes())
    swapped = dataclasses.replace(bundle, path=tmp_path)
    with pytest.raises(InvalidInputError, match=re.escape("not allowed: ['sklearn.ensemble._hist_gradient_boosting")):
        model.load_estimator(swapped)


@pytest.mark.parametrize("content", [b"", b"not a zip", b"PK\x05\x06" + b"\x00" * 18])
def test_unreadable_skops_file_is_one_invalid_input_line(
    good_bundles: dict[str, Path], tmp_path: Path, content: bytes
) -> None:
    bundle = model.read_bundle(good_bundles["logistic_regression"])
    (tmp_path / model.SKOPS_FILE).write_bytes(content)
    broken = dataclasses.replace(bundle, path=tmp_path)
    with pytest.raises(
        InvalidInputError, match=r"^model file .*model\.skops is not a readable skops file: "
    ) as refused:
        model.load_estimator(broken)
    assert "\n" not in str(refused.value)


def test_trusted_types_of_a_good_file_are_within_the_allow_list(good_bundles: dict[str, Path]) -> None:
    for model_type, bundle_dir in good_bundles.items():
        trusted = model.trusted_skops_types(bundle_dir / model.SKOPS_FILE, model_type)
        assert trusted == list(ALLOWED_SKOPS_TYPES[model_type])
    with pytest.raises(InvalidInputError, match="model type 'xgboost' is not stored as a skops file"):
        model.trusted_skops_types(good_bundles["random_forest"] / model.SKOPS_FILE, "xgboost")


@pytest.mark.parametrize("model_type", model.MODEL_TYPES)
def test_every_supported_type_round_trips_with_missing_values_and_categories(model_type: str, tmp_path: Path) -> None:
    frame, target = skops_types._mixed_table(300)
    schema = data.infer_schema(frame, target)
    X, y = data.encode_features(frame, schema), data.encode_labels(frame, schema)
    assert np.isnan(X).any()
    params = {"n_estimators": 5} if model_type in ("xgboost", "random_forest") else {}
    fitted = model.fit(model_type, params, X, y)
    model.save_bundle(fitted, model_type, params, schema, tmp_path)
    loaded = model.load_estimator(model.read_bundle(tmp_path))
    np.testing.assert_array_equal(model.positive_scores(loaded, X), model.positive_scores(fitted, X))


# ---------------------------------------------------------------- nothing else loads skops or MLflow models

# Calls that would load a model file while bypassing load_estimator's allow-list check.
_LOADERS = {"load", "loads"}
_MLFLOW_LOADERS = {"load_model"}


def _model_loads(path: Path) -> list[tuple[str, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = ast.unparse(node.func.value)
            if (owner in ("sio", "skops.io") and node.func.attr in _LOADERS) or (
                owner.startswith("mlflow") and node.func.attr in _MLFLOW_LOADERS
            ):
                found.append((str(path.relative_to(SRC)), ast.unparse(node.func)))
    return found


def test_only_core_model_loads_skops_files_and_nothing_loads_models_through_mlflow() -> None:
    calls = [call for path in sorted(SRC.rglob("*.py")) for call in _model_loads(path)]
    # The one guarded load; another one would need the allow-list too (and a test here).
    assert calls == [("core/model.py", "sio.loads")]
