"""Generate the exact skops type allow-list from the scikit-learn models the project trains.

``python -m hybridml.core.skops_types --write`` trains every supported scikit-learn model type on the tables
below, saves each one as :func:`hybridml.core.model.save_bundle` does, asks skops which types in the file it
does not trust by default (:func:`skops.io.get_untrusted_types`) and writes the union per model type to
``skops_allowlist.py``. ``--check`` exits 1 when the committed list differs. Rerun ``--write`` after upgrading
scikit-learn or skops, and review the difference before committing it: every name added there is a type a
model file may make skops import and construct.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hybridml.core import data, model

ALLOWLIST_FILE = Path(__file__).with_name("skops_allowlist.py")
WRITE_COMMAND = "python -m hybridml.core.skops_types --write"

# Small sizes keep generation fast; the number of trees or iterations does not change which types a model holds.
_SMALL: dict[str, dict[str, Any]] = {
    "hist_gradient_boosting": {"max_iter": 10},
    "random_forest": {"n_estimators": 5},
    "logistic_regression": {},
}
# The hyper-parameters HPO tunes (hybridml.core.hpo.search_space), set away from their defaults.
_TUNED: dict[str, dict[str, Any]] = {
    "hist_gradient_boosting": {"max_iter": 10, "learning_rate": 0.05, "max_leaf_nodes": 8, "l2_regularization": 1.0},
    "random_forest": {"n_estimators": 5, "max_depth": 4, "min_samples_leaf": 5},
    "logistic_regression": {"C": 0.01, "max_iter": 1000},
}


def _mixed_table(n_rows: int, seed: int = 0) -> tuple[pd.DataFrame, str]:
    """Numbers, integers, booleans and text categories, with missing values in all but the label."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "amount": rng.normal(100.0, 30.0, n_rows),
            "count": rng.integers(0, 20, n_rows),
            "flag": rng.random(n_rows) < 0.3,
            "colour": rng.choice(["red", "green", "blue"], n_rows),
            "region": rng.choice(["north", "south", "east", "west", "centre"], n_rows),
        }
    )
    score = (frame["amount"] - 100.0) / 30.0 + (frame["colour"] == "red") - 0.5 * frame["flag"]
    frame["label"] = np.where(score + rng.normal(0.0, 1.0, n_rows) > 0.3, "yes", "no")
    frame["amount"] = frame["amount"].mask(rng.random(n_rows) < 0.1)
    frame["region"] = frame["region"].mask(rng.random(n_rows) < 0.1)
    return frame, "label"


def _tables() -> Iterator[tuple[str, pd.DataFrame, str]]:
    """The tables every model type is trained on: each shape of input that can change what a model stores."""
    frame, target = data.builtin_breast_cancer()
    yield "breast cancer (numeric, complete)", frame, target
    yield "mixed (categories, booleans, missing values)", *_mixed_table(400)
    # Above 10,000 rows HistGradientBoosting turns early stopping on and keeps validation scores.
    yield "large mixed (early stopping)", *_mixed_table(12_000, seed=1)


def observed_types(
    on_model: Callable[[model.Bundle, str, Any, np.ndarray], None] | None = None,
) -> dict[str, tuple[str, ...]]:
    """Untrusted skops types per supported scikit-learn model type, over every table and parameter set.

    Args:
        on_model: called as ``on_model(bundle, table_name, fitted, X)`` for each saved model while its bundle
            exists, so a test can check the same models load back without training them twice.
    """
    import skops.io as sio

    found: dict[str, set[str]] = {model_type: set() for model_type in model.SKLEARN_TYPES}
    with tempfile.TemporaryDirectory(prefix="hybridml-skops-types-") as tmp:
        for table_name, frame, target in _tables():
            schema = data.infer_schema(frame, target)
            X, y = data.encode_features(frame, schema), data.encode_labels(frame, schema)  # noqa: N806
            for model_type in model.SKLEARN_TYPES:
                for params in (_SMALL[model_type], _TUNED[model_type]):
                    fitted = model.fit(model_type, params, X, y)
                    bundle = model.save_bundle(fitted, model_type, params, schema, Path(tmp) / model_type)
                    found[model_type].update(sio.get_untrusted_types(file=bundle.path / bundle.model_file))
                    if on_model is not None:
                        on_model(bundle, table_name, fitted, X)
    return {model_type: tuple(sorted(types)) for model_type, types in found.items()}


def render(types: dict[str, tuple[str, ...]]) -> str:
    """The text of ``skops_allowlist.py`` for ``types`` (formatted as ``ruff format`` leaves it)."""
    lines = [
        '"""Exact skops types each supported scikit-learn model may contain. Generated: do not edit by hand."""',
        "",
        f"# Written by `{WRITE_COMMAND}` with scikit-learn {version('scikit-learn')} and skops {version('skops')}.",
        "# Only types listed here may be constructed from a model.skops file (hybridml.core.model.load_estimator).",
        "ALLOWED_SKOPS_TYPES: dict[str, tuple[str, ...]] = {",
    ]
    for model_type in sorted(types):
        names = types[model_type]
        one_line = f'    "{model_type}": ({", ".join(json.dumps(name) for name in names)},),'
        if len(names) == 1 and len(one_line) <= 120:  # ruff joins a one-item tuple that fits on a line
            lines.append(one_line)
            continue
        lines.append(f'    "{model_type}": (')
        lines.extend(f'        "{name}",' for name in names)
        lines.append("    ),")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``--write`` regenerates the allow-list file; ``--check`` exits 1 if it is out of date."""
    parser = argparse.ArgumentParser(prog="python -m hybridml.core.skops_types", description=__doc__)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help=f"rewrite {ALLOWLIST_FILE.name}")
    action.add_argument("--check", action="store_true", help=f"exit 1 if {ALLOWLIST_FILE.name} is out of date")
    args = parser.parse_args(argv)
    types = observed_types()
    if args.write:
        ALLOWLIST_FILE.write_text(render(types))
        print(f"wrote {ALLOWLIST_FILE} ({sum(len(v) for v in types.values())} types)")
        return 0
    from hybridml.core.skops_allowlist import ALLOWED_SKOPS_TYPES

    if types != ALLOWED_SKOPS_TYPES:
        print(f"{ALLOWLIST_FILE} is out of date: found {types}; run `{WRITE_COMMAND}`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
