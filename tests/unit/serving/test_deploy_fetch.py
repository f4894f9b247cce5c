"""Fetching a model by reference: the default fetch (paths, file://), the MLflow fetch's error mapping, model_ref."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import pytest

from hybridml.core.data import encode_features, encode_labels, infer_schema
from hybridml.core.model import fit, positive_scores, read_bundle, save_bundle
from hybridml.core.profile import build_profile
from hybridml.deploy import fetch_artifact, mlflow_fetch, model_ref
from hybridml.deploy.fetch import member_uri
from hybridml.errors import InvalidInputError, NotFoundError, NotReadyError

pytestmark = pytest.mark.unit


def test_local_paths_and_file_uris_are_used_in_place(xgb_bundle: Path, tmp_path: Path) -> None:
    assert fetch_artifact(str(xgb_bundle), tmp_path) == xgb_bundle
    assert fetch_artifact(xgb_bundle.as_uri(), tmp_path) == xgb_bundle
    assert fetch_artifact(member_uri(xgb_bundle.as_uri(), "hybridml.json"), tmp_path) == xgb_bundle / "hybridml.json"
    spaced = tmp_path / "a b"
    shutil.copytree(xgb_bundle, spaced)
    assert fetch_artifact(spaced.as_uri(), tmp_path) == spaced  # file:///.../a%20b
    assert list(tmp_path.iterdir()) == [spaced]  # nothing was copied into the scratch directory


def test_nothing_at_a_path_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"^nothing at file://.*/gone$"):
        fetch_artifact((tmp_path / "gone").as_uri(), tmp_path)


@pytest.mark.parametrize("uri", ["gs://bucket/m", "models:/m/1", "mlflow-artifacts:/1/m", "http://x/m"])
def test_other_schemes_need_a_fetch_function_that_knows_them(uri: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="needs a fetch function that knows it"):
        fetch_artifact(uri, tmp_path)


@pytest.mark.parametrize(
    ("uri", "member", "expected"),
    [
        ("/a/b", "hybridml.json", "/a/b/hybridml.json"),
        ("file:///a/b/", "hybridml.json", "file:///a/b/hybridml.json"),
        ("s3://bucket/m/1", "profile.json", "s3://bucket/m/1/profile.json"),
        ("models:/m/1", "hybridml.json", "models:/m/1/hybridml.json"),
    ],
)
def test_member_uri(uri: str, member: str, expected: str) -> None:
    assert member_uri(uri, member) == expected


def test_model_ref_reads_schema_and_no_profile(xgb_bundle: Path) -> None:
    ref = model_ref("cancer", 4, xgb_bundle.as_uri())
    assert (ref.name, ref.version, ref.artifact_uri, ref.profile) == ("cancer", "4", xgb_bundle.as_uri(), None)
    assert ref.schema == read_bundle(xgb_bundle).schema


def test_model_ref_reads_the_reference_profile(tmp_path: Path, mixed_frame: pd.DataFrame) -> None:
    schema = infer_schema(mixed_frame, "label")
    X, y = encode_features(mixed_frame, schema), encode_labels(mixed_frame, schema)
    model = fit("logistic_regression", {}, X, y)
    profile = build_profile(mixed_frame, schema, positive_scores(model, X))
    save_bundle(model, "logistic_regression", {}, schema, tmp_path / "b", profile=profile)
    ref = model_ref("mixed", "1", str(tmp_path / "b"))
    assert ref.profile == profile
    assert ref.schema == schema


def test_model_ref_of_no_bundle_or_a_broken_one(tmp_path: Path, xgb_bundle: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFoundError, match=r"^no hybridml model at .*empty: hybridml\.json is missing$"):
        model_ref("m", 1, str(tmp_path / "empty"))
    broken = tmp_path / "broken"
    shutil.copytree(xgb_bundle, broken)
    (broken / "hybridml.json").write_text('{"schema": {"features": "x"}}')
    with pytest.raises(InvalidInputError, match="malformed"):
        model_ref("m", 1, str(broken))
    (broken / "hybridml.json").write_text("{not json")
    with pytest.raises(InvalidInputError, match="malformed model manifest at"):
        model_ref("m", 1, str(broken))
    shutil.copy(xgb_bundle / "hybridml.json", broken / "hybridml.json")
    (broken / "profile.json").write_text(json.dumps({"format_version": 1}))
    with pytest.raises(InvalidInputError, match=r"\(at .*broken\)$"):
        model_ref("m", 1, str(broken))


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """MLflow's download function replaced at the third-party edge: records its arguments, raises on demand."""
    import mlflow.artifacts
    import mlflow.exceptions
    from mlflow.protos import databricks_pb2

    calls: list[dict[str, Any]] = []

    def download(**kwargs: Any) -> str:
        calls.append(kwargs)
        code = kwargs["artifact_uri"].rsplit("/", 1)[-1]
        if code.isupper():
            error_code = getattr(databricks_pb2, code)
            raise mlflow.exceptions.MlflowException(f"{code} happened\nsecond line", error_code=error_code)
        if code == "oserror":
            raise ConnectionRefusedError("refused")
        if code == "missing":
            raise FileNotFoundError("gone")
        local = Path(kwargs["dst_path"]) / "model"
        local.mkdir(parents=True)
        return str(local)

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", download)
    return calls


def test_mlflow_fetch_uses_its_own_tracking_and_registry_uri(downloads: list[dict[str, Any]], tmp_path: Path) -> None:
    fetch = mlflow_fetch("http://tracking:5000")
    assert fetch("mlflow-artifacts:/1/m/ok", tmp_path) == tmp_path / "model"
    assert downloads == [
        {
            "artifact_uri": "mlflow-artifacts:/1/m/ok",
            "dst_path": str(tmp_path),
            "tracking_uri": "http://tracking:5000",
            "registry_uri": "http://tracking:5000",
        }
    ]


class FakeClient:
    """The few MlflowClient reads that resolve a models:/ URI; records which registry it was made for."""

    made_for: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, **kwargs: Any) -> None:
        FakeClient.made_for.append(kwargs)

    def get_model_version_download_uri(self, name: str, version: str) -> str:
        return f"mlflow-artifacts:/store/{name}/v{version}/"

    def get_model_version_by_alias(self, name: str, alias: str) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(version=7 if alias == "champion" else 0)

    def get_logged_model(self, model_id: str) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(artifact_location=f"mlflow-artifacts:/logged/{model_id}")


@pytest.mark.parametrize(
    ("uri", "location"),
    [
        ("models:/m/3", "mlflow-artifacts:/store/m/v3"),
        ("models:/m/3/hybridml.json", "mlflow-artifacts:/store/m/v3/hybridml.json"),
        ("models:/m@champion/profile.json", "mlflow-artifacts:/store/m/v7/profile.json"),
        ("models:/m-0a1b/hybridml.json", "mlflow-artifacts:/logged/m-0a1b/hybridml.json"),
    ],
)
def test_models_uris_are_resolved_with_this_registry(
    downloads: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uri: str, location: str
) -> None:
    import mlflow

    monkeypatch.setattr(mlflow, "MlflowClient", FakeClient)
    FakeClient.made_for.clear()
    mlflow_fetch("sqlite:///t.db", "sqlite:///r.db")(uri, tmp_path)
    assert FakeClient.made_for == [{"tracking_uri": "sqlite:///t.db", "registry_uri": "sqlite:///r.db"}]
    assert [d["artifact_uri"] for d in downloads] == [location]


@pytest.mark.parametrize("uri", ["models:/m", "models:/m/latest", "models:/"])
def test_models_uris_of_other_forms_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uri: str) -> None:
    import mlflow

    monkeypatch.setattr(mlflow, "MlflowClient", FakeClient)
    with pytest.raises(InvalidInputError, match="use models:/NAME/VERSION, models:/NAME@ALIAS or models:/m-ID"):
        mlflow_fetch("sqlite:///t.db")(uri, tmp_path)


def test_mlflow_fetch_reads_local_paths_without_mlflow(downloads: list[dict[str, Any]], xgb_bundle: Path) -> None:
    assert mlflow_fetch("sqlite:///x.db")(xgb_bundle.as_uri(), xgb_bundle.parent) == xgb_bundle
    assert downloads == []


@pytest.mark.parametrize(
    ("code", "error", "message"),
    [
        ("RESOURCE_DOES_NOT_EXIST", NotFoundError, "^nothing at mlflow-artifacts:/x/RESOURCE_DOES_NOT_EXIST: "),
        ("INVALID_PARAMETER_VALUE", InvalidInputError, "^cannot fetch .*: INVALID_PARAMETER_VALUE happened$"),
        ("TEMPORARILY_UNAVAILABLE", NotReadyError, "^cannot fetch .*: TEMPORARILY_UNAVAILABLE happened$"),
        ("missing", NotFoundError, "^nothing at mlflow-artifacts:/x/missing$"),
        ("oserror", NotReadyError, "^cannot fetch mlflow-artifacts:/x/oserror: refused$"),
    ],
)
def test_mlflow_errors_become_hybridml_errors(
    downloads: list[dict[str, Any]], tmp_path: Path, code: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        mlflow_fetch("http://t")(f"mlflow-artifacts:/x/{code}", tmp_path)
