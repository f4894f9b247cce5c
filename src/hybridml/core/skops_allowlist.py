"""Exact skops types each supported scikit-learn model may contain. Generated: do not edit by hand."""

# Written by `python -m hybridml.core.skops_types --write` with scikit-learn 1.9.1 and skops 0.16.0.
# Only types listed here may be constructed from a model.skops file (hybridml.core.model.load_estimator).
ALLOWED_SKOPS_TYPES: dict[str, tuple[str, ...]] = {
    "hist_gradient_boosting": ("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",),
    "logistic_regression": ("numpy.dtype",),
    "random_forest": ("sklearn.tree._tree.Tree",),
}
