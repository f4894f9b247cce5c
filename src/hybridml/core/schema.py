"""Feature schema and reference statistics inferred at preprocessing and saved with every model."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from hybridml.errors import InvalidInputError

NUMERIC = "float"
INTEGER = "int"
BOOLEAN = "bool"
CATEGORY = "category"
DTYPES = (NUMERIC, INTEGER, BOOLEAN, CATEGORY)


@dataclass(frozen=True)
class FeatureSpec:
    """One input column as seen in the training data.

    ``quantiles`` (deciles of the training values) and ``categories`` are the reference statistics that
    serving validation and drift monitoring compare live inputs against.
    """

    name: str
    dtype: str
    nullable: bool
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    nan_fraction: float = 0.0
    quantiles: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise InvalidInputError(f"feature {self.name!r}: unknown dtype {self.dtype!r} (expected one of {DTYPES})")


@dataclass(frozen=True)
class FeatureSchema:
    """The contract between training data, the saved model and serving requests.

    ``classes`` is ``(negative, positive)``: a score is the probability of ``classes[1]``. ``dropped`` names the
    input columns that are not features and why (identifier-like, or dropped on request); they are not part of
    what a request must match.
    """

    target: str
    classes: tuple[str, str]
    features: tuple[FeatureSpec, ...]
    n_rows: int
    data_hash: str
    extra: dict[str, Any] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """Feature names in model input order."""
        return [f.name for f in self.features]

    @property
    def schema_hash(self) -> str:
        """``sha256:`` of what a request must match: feature names, order, dtypes and known categories.

        Statistics are left out, so two models trained on different rows of the same table layout share it.
        """
        layout = [[f.name, f.dtype, list(f.categories)] for f in self.features]
        text = json.dumps({"target": self.target, "classes": list(self.classes), "features": layout})
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN-free)."""
        return _clean(asdict(self))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FeatureSchema:
        """Rebuild a schema from :meth:`to_dict` output, rejecting anything malformed."""
        try:
            features = tuple(
                FeatureSpec(
                    **{**f, "quantiles": tuple(f.get("quantiles", ())), "categories": tuple(f.get("categories", ()))}
                )
                for f in raw["features"]
            )
            classes = tuple(str(c) for c in raw["classes"])
            if len(classes) != 2:
                raise ValueError(f"expected 2 classes, got {len(classes)}")
            # Schemas written before columns were dropped have no "dropped": nothing was.
            dropped = raw.get("dropped", {})
            if not isinstance(dropped, dict):
                raise ValueError(f"dropped must be an object of column: reason, got {type(dropped).__name__}")
            return cls(
                target=str(raw["target"]),
                classes=(classes[0], classes[1]),
                features=features,
                n_rows=int(raw["n_rows"]),
                data_hash=str(raw["data_hash"]),
                extra=dict(raw.get("extra", {})),
                dropped={str(k): str(v) for k, v in dropped.items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"malformed feature schema: {exc}") from exc

    def differences(self, other: FeatureSchema) -> list[str]:
        """What makes ``other`` (new data) incompatible with this schema (a registered model's), as sentences.

        Compatible means: same target, same classes with the same positive class, same feature names in the
        same order, same dtypes. Ranges and statistics may differ (that is drift, not a schema change).
        """
        problems: list[str] = []
        if self.target != other.target:
            problems.append(f"target is {other.target!r}, registered model has {self.target!r}")
        elif set(self.classes) != set(other.classes):
            problems.append(f"classes are {list(other.classes)}, registered model has {list(self.classes)}")
        elif self.classes[1] != other.classes[1]:
            # Same labels, other positive class: its scores would mean the opposite of the registered model's.
            problems.append(f"positive class is {other.classes[1]!r}, registered model has {self.classes[1]!r}")
        mine, theirs = self.names, other.names
        missing = [n for n in mine if n not in theirs]
        added = [n for n in theirs if n not in mine]
        if missing:
            problems.append(f"missing columns {missing}")
        if added:
            problems.append(f"unexpected columns {added}")
        if not missing and not added and mine != theirs:
            problems.append("columns are in a different order")
        by_name = {f.name: f for f in other.features}
        for spec in self.features:
            new = by_name.get(spec.name)
            if new is not None and new.dtype != spec.dtype:
                problems.append(f"column {spec.name!r} is {new.dtype}, registered model has {spec.dtype}")
        return problems


def _clean(value: Any) -> Any:
    """Replace NaN/inf by None recursively so the schema is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value
