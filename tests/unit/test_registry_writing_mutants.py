"""What the registry writes outside its own tags: a bundle logged as an MLflow model (registry/_mlflow/writing.py:
the files, the requirements, the calls in order, the failure path) and approval mirrored to and from SageMaker
(registry/sagemaker_mirror.py: every field written either way, paging, refusals, the history events), driven in
process against in-memory MLflow and SageMaker clients (issue 12: only tests with servers exercised them)."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
import yaml
from botocore.exceptions import ClientError
from mlflow.entities import LoggedModelStatus
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from hybridml.adapters import mlflow_client
from hybridml.core import data, model
from hybridml.core.approval import APPROVED, PENDING, REJECTED
from hybridml.core.model import MANIFEST, PROFILE_FILE, Bundle, read_bundle
from hybridml.core.profile import build_profile
from hybridml.errors import ConflictError, HybridmlError, InvalidInputError, NotFoundError, NotReadyError
from hybridml.registry._mlflow import writing
from hybridml.registry._mlflow.backend import Backend
from hybridml.registry._mlflow.registry import Registry
from hybridml.registry.protocol import HistoryEvent, VersionInfo
from hybridml.registry.sagemaker_mirror import (
    META_MIRRORED,
    META_MODEL,
    META_VERSION,
    MIRROR_ACTOR,
    MirrorResult,
    SageMakerMirror,
)

pytestmark = pytest.mark.unit


# ------------------------------------------------------------------ writing.py


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Bundle]:
    """An XGBoost bundle with a reference profile and a scikit-learn (skops) one without."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=80), "b": rng.normal(size=80)})
    frame["y"] = np.where(frame["a"] + rng.normal(scale=0.5, size=80) > 0, "p", "n")
    schema = data.infer_schema(frame, "y")
    X, y = data.encode_features(frame, schema), data.encode_labels(frame, schema)
    root = tmp_path_factory.mktemp("bundles")
    xgb = model.fit("xgboost", {"n_estimators": 3, "max_depth": 2}, X, y)
    profile = build_profile(frame, schema, model.positive_scores(xgb, X))
    lr = model.fit("logistic_regression", {"C": 0.5}, X, y)
    return {
        "xgboost": model.save_bundle(
            xgb, "xgboost", {"n_estimators": 3, "max_depth": 2}, schema, root / "x", profile=profile
        ),
        "logistic_regression": model.save_bundle(lr, "logistic_regression", {"C": 0.5}, schema, root / "l"),
    }


class Tracking:
    """The MLflow client calls log_bundle makes; a logged model's artifacts are copied to ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.log: list[tuple[Any, ...]] = []
        self.fail: dict[str, BaseException] = {}

    def _maybe_fail(self, op: str) -> None:
        if op in self.fail:
            raise self.fail.pop(op)

    def get_run(self, run_id: str) -> SimpleNamespace:
        self._maybe_fail("get_run")
        self.log.append(("get-run", run_id))
        return SimpleNamespace(info=SimpleNamespace(experiment_id="7"))

    def create_logged_model(self, **kw: Any) -> SimpleNamespace:
        self._maybe_fail("create_logged_model")
        self.log.append(("create", kw))
        return SimpleNamespace(model_id="m-0abc", artifact_location=str(self.root / "artifacts"))

    def log_model_artifacts(self, model_id: str, local_dir: str) -> None:
        self._maybe_fail("log_model_artifacts")
        shutil.copytree(local_dir, self.root / model_id)
        self.log.append(("artifacts", model_id))

    def log_outputs(self, run_id: str, outputs: list[Any]) -> None:
        self._maybe_fail("log_outputs")
        self.log.append(("outputs", run_id, [(o.model_id, o.step) for o in outputs]))

    def finalize_logged_model(self, model_id: str, status: Any) -> None:
        self._maybe_fail("finalize_logged_model")
        self.log.append(("finalize", model_id, status))


def tracking_backend(client: Tracking) -> Backend:
    return Backend(tracking_uri="http://mlflow", user="svc", client=client)  # type: ignore[arg-type]


def test_an_xgboost_bundle_is_logged_as_json_with_its_manifest_profile_and_pins(
    bundles: dict[str, Bundle], tmp_path: Path
) -> None:
    client = Tracking(tmp_path)
    bundle = bundles["xgboost"]
    assert writing.log_bundle(tracking_backend(client), "run-1", bundle) == "models:/m-0abc"
    assert client.log == [
        ("get-run", "run-1"),
        (
            "create",
            {
                "experiment_id": "7",
                "name": "model",
                "source_run_id": "run-1",
                "params": {"n_estimators": "3", "max_depth": "2"},
                "tags": {"hybridml.model_type": "xgboost"},
            },
        ),
        ("artifacts", "m-0abc"),
        ("outputs", "run-1", [("m-0abc", 0)]),
        ("finalize", "m-0abc", LoggedModelStatus.READY),
    ]
    logged = tmp_path / "m-0abc"
    assert (logged / MANIFEST).read_bytes() == (bundle.path / MANIFEST).read_bytes()
    assert (logged / PROFILE_FILE).read_bytes() == (bundle.path / PROFILE_FILE).read_bytes()
    again = read_bundle(logged)  # the logged directory is itself a bundle
    assert (again.model_type, again.model_file, again.params) == ("xgboost", "model.json", bundle.params)
    mlmodel = yaml.safe_load((logged / "MLmodel").read_text())
    assert mlmodel["model_id"] == "m-0abc" and mlmodel["model_uuid"] == "m-0abc" and mlmodel["run_id"] == "run-1"
    assert mlmodel["artifact_path"] == str(tmp_path / "artifacts")
    assert mlmodel["flavors"]["xgboost"]["model_format"] == "json"
    pins = (logged / "requirements.txt").read_text().split()
    # Ours exactly, after the one pin MLflow adds itself (the mlflow version it was logged with).
    assert pins[0].startswith("mlflow==") and pins[1:] == writing.requirements("xgboost")


def test_a_sklearn_bundle_is_logged_as_skops_trusting_only_its_vetted_types(
    bundles: dict[str, Bundle], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Skops even where MLflow's own default is a pickle format (on Databricks it is cloudpickle).
    monkeypatch.setattr(mlflow.sklearn, "_get_default_serialization_format", lambda: "cloudpickle")
    client = Tracking(tmp_path)
    bundle = bundles["logistic_regression"]
    assert writing.log_bundle(tracking_backend(client), "run-2", bundle) == "models:/m-0abc"
    logged = tmp_path / "m-0abc"
    assert not (logged / PROFILE_FILE).exists()  # none in the bundle: none logged
    again = read_bundle(logged)
    assert again.model_file == "model.skops"
    # The logged estimator is the bundle's: it loads (vetted) and scores the same.
    X = np.random.default_rng(1).normal(size=(5, 2))
    expected = model.positive_scores(model.load_estimator(bundle), X)
    np.testing.assert_allclose(model.positive_scores(model.load_estimator(again), X), expected)
    assert client.log[1] == (
        "create",
        {
            "experiment_id": "7",
            "name": "model",
            "source_run_id": "run-2",
            "params": {"C": "0.5"},
            "tags": {"hybridml.model_type": "logistic_regression"},
        },
    )
    mlmodel = yaml.safe_load((logged / "MLmodel").read_text())
    assert (mlmodel["model_id"], mlmodel["model_uuid"], mlmodel["run_id"]) == ("m-0abc", "m-0abc", "run-2")
    flavor = mlmodel["flavors"]["sklearn"]
    assert flavor["serialization_format"] == "skops"
    trusted = model.trusted_skops_types(bundle.path / bundle.model_file, "logistic_regression")
    assert sorted(flavor["skops_trusted_types"]) == sorted(trusted)
    pins = (logged / "requirements.txt").read_text().split()
    # Ours exactly, after the one pin MLflow adds itself (the mlflow version it was logged with).
    assert pins[0].startswith("mlflow==") and pins[1:] == writing.requirements("logistic_regression")


def test_the_registry_logs_a_bundle_through_its_own_client(
    bundles: dict[str, Bundle], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Tracking(tmp_path)
    monkeypatch.setattr(mlflow_client, "client", lambda tracking_uri: client)
    assert Registry("http://mlflow", user="p").log_bundle("run-3", bundles["xgboost"]) == "models:/m-0abc"
    assert client.log[0] == ("get-run", "run-3")
    assert read_bundle(tmp_path / "m-0abc").model_type == "xgboost"


def test_the_reference_profile_travels_only_when_the_bundle_has_one(bundles: dict[str, Bundle], tmp_path: Path) -> None:
    assert writing._extra_files(bundles["xgboost"]) == [PROFILE_FILE]
    assert writing._extra_files(bundles["logistic_regression"]) == []
    odd = tmp_path / "odd"
    shutil.copytree(bundles["logistic_regression"].path, odd)
    (odd / PROFILE_FILE).mkdir()  # a directory of that name is not a profile file
    assert writing._extra_files(Bundle(odd, "logistic_regression", "model.skops", bundles["xgboost"].schema, {})) == []


def test_a_failed_upload_marks_the_logged_model_failed_and_reports_the_model(
    bundles: dict[str, Bundle], tmp_path: Path
) -> None:
    client = Tracking(tmp_path)
    client.fail["log_model_artifacts"] = MlflowException("disk full", error_code=INVALID_PARAMETER_VALUE)
    with pytest.raises(InvalidInputError) as caught:
        writing.log_bundle(tracking_backend(client), "run-1", bundles["xgboost"])
    assert str(caught.value) == "model m-0abc: disk full"
    assert client.log[-1] == ("finalize", "m-0abc", LoggedModelStatus.FAILED)
    assert [e[0] for e in client.log] == ["get-run", "create", "finalize"]


def test_a_failed_output_link_names_the_run_and_marks_the_model_failed(
    bundles: dict[str, Bundle], tmp_path: Path
) -> None:
    client = Tracking(tmp_path)
    client.fail["log_outputs"] = MlflowException("no such run", error_code=INVALID_PARAMETER_VALUE)
    with pytest.raises(InvalidInputError, match=r"^run 'run-1': no such run$"):
        writing.log_bundle(tracking_backend(client), "run-1", bundles["xgboost"])
    assert client.log[-1] == ("finalize", "m-0abc", LoggedModelStatus.FAILED)


def test_a_failure_to_mark_it_failed_is_logged_and_the_first_error_wins(
    bundles: dict[str, Bundle], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = Tracking(tmp_path)
    client.fail["log_model_artifacts"] = MlflowException("disk full", error_code=INVALID_PARAMETER_VALUE)
    client.fail["finalize_logged_model"] = MlflowException("down too")
    with caplog.at_level(logging.WARNING, logger=writing.__name__), pytest.raises(InvalidInputError, match="disk full"):
        writing.log_bundle(tracking_backend(client), "run-1", bundles["xgboost"])
    ours = [r.getMessage() for r in caplog.records if r.name == writing.__name__]
    assert ours == ["could not mark logged model m-0abc as failed"]


def test_an_error_of_our_own_while_marking_it_failed_is_not_hidden(bundles: dict[str, Bundle], tmp_path: Path) -> None:
    client = Tracking(tmp_path)
    client.fail["log_model_artifacts"] = MlflowException("disk full", error_code=INVALID_PARAMETER_VALUE)
    client.fail["finalize_logged_model"] = TypeError("a bug")
    with pytest.raises(TypeError, match="a bug"):
        writing.log_bundle(tracking_backend(client), "run-1", bundles["xgboost"])


def test_failures_before_the_model_exists_name_the_run_and_leave_nothing_to_finalize(
    bundles: dict[str, Bundle], tmp_path: Path
) -> None:
    client = Tracking(tmp_path)
    client.fail["get_run"] = MlflowException("bad run id", error_code=INVALID_PARAMETER_VALUE)
    with pytest.raises(InvalidInputError, match=r"^run 'run-x': bad run id$"):
        writing.log_bundle(tracking_backend(client), "run-x", bundles["xgboost"])
    client.fail["create_logged_model"] = MlflowException("refused", error_code=INVALID_PARAMETER_VALUE)
    with pytest.raises(InvalidInputError, match=r"^logged model of run 'run-x': refused$"):
        writing.log_bundle(tracking_backend(client), "run-x", bundles["xgboost"])
    assert [e[0] for e in client.log] == ["get-run"]


def test_a_failed_final_mark_names_the_model(bundles: dict[str, Bundle], tmp_path: Path) -> None:
    client = Tracking(tmp_path)
    client.fail["finalize_logged_model"] = MlflowException("refused", error_code=INVALID_PARAMETER_VALUE)
    with pytest.raises(InvalidInputError, match=r"^model m-0abc: refused$"):
        writing.log_bundle(tracking_backend(client), "run-1", bundles["xgboost"])


def fake_versions(monkeypatch: pytest.MonkeyPatch, installed: dict[str, str]) -> None:
    def version(dist: str) -> str:
        if dist not in installed:
            raise importlib.metadata.PackageNotFoundError(dist)
        return installed[dist]

    monkeypatch.setattr(writing.importlib.metadata, "version", version)


def test_requirements_pin_the_first_installed_xgboost_and_skops_only_for_skops_models(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_versions(monkeypatch, {"xgboost": "2.1", "scikit-learn": "1.6", "skops": "0.11", "numpy": "2.2"})
    assert writing.requirements("xgboost") == ["xgboost==2.1", "scikit-learn==1.6", "numpy==2.2"]
    assert writing.requirements("random_forest") == ["xgboost==2.1", "scikit-learn==1.6", "skops==0.11", "numpy==2.2"]
    fake_versions(monkeypatch, {"xgboost-cpu": "3.0", "xgboost": "2.1", "scikit-learn": "1.6", "numpy": "2.2"})
    assert writing.requirements("xgboost") == ["xgboost-cpu==3.0", "scikit-learn==1.6", "numpy==2.2"]
    assert writing.requirements("logistic_regression") == ["xgboost-cpu==3.0", "scikit-learn==1.6", "numpy==2.2"]
    fake_versions(monkeypatch, {})
    assert writing.requirements("xgboost") == []


# ------------------------------------------------------------------ sagemaker_mirror.py


def client_error(code: str, message: str = "no") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "Op")


class SageMaker:
    """The SageMaker calls of the mirror on dicts; list_model_packages pages by ``page_size``."""

    def __init__(self, page_size: int = 1) -> None:
        self.page_size = page_size
        self.groups: dict[str, str] = {}
        self.packages: dict[str, dict[str, Any]] = {}
        self.log: list[tuple[str, dict[str, Any]]] = []
        self.throttle: dict[str, int] = {}

    def _enter(self, op: str, params: dict[str, Any]) -> None:
        # A paging loop that never ends fails here, not by a timeout.
        assert len(self.log) < 200, "too many SageMaker calls"
        if self.throttle.get(op):
            self.throttle[op] -= 1
            raise client_error("ThrottlingException", "slow down")
        self.log.append((op, params))

    def describe_model_package_group(self, **params: Any) -> dict[str, Any]:
        self._enter("describe_model_package_group", params)
        name = params["ModelPackageGroupName"]
        if name not in self.groups:
            raise client_error("ResourceNotFound", f"group {name} does not exist")
        return {"ModelPackageGroupName": name}

    def create_model_package_group(self, **params: Any) -> dict[str, Any]:
        self._enter("create_model_package_group", params)
        self.groups[params["ModelPackageGroupName"]] = params["ModelPackageGroupDescription"]
        return {}

    def add_package(self, group: str, status: str, metadata: dict[str, str] | None, **more: Any) -> str:
        self.groups.setdefault(group, "")
        arn = f"arn:aws:sagemaker:eu-west-1:1:model-package/{group}/{len(self.packages) + 1}"
        self.packages[arn] = {"ModelPackageGroupName": group, "ModelPackageArn": arn, "ModelApprovalStatus": status}
        if metadata is not None:
            self.packages[arn]["CustomerMetadataProperties"] = dict(metadata)
        self.packages[arn].update(more)
        return arn

    def create_model_package(self, **params: Any) -> dict[str, Any]:
        self._enter("create_model_package", params)
        arn = self.add_package(
            params["ModelPackageGroupName"], params["ModelApprovalStatus"], params["CustomerMetadataProperties"]
        )
        return {"ModelPackageArn": arn}

    def list_model_packages(self, **params: Any) -> dict[str, Any]:
        self._enter("list_model_packages", params)
        group = params["ModelPackageGroupName"]
        if group not in self.groups:
            raise client_error("ResourceNotFound", f"group {group} does not exist")
        arns = [a for a, p in self.packages.items() if p["ModelPackageGroupName"] == group]
        start = int(params.get("NextToken", "0"))
        page: dict[str, Any] = {
            "ModelPackageSummaryList": [{"ModelPackageArn": a} for a in arns[start : start + self.page_size]]
        }
        if start + self.page_size < len(arns):
            page["NextToken"] = str(start + self.page_size)
        return page

    def describe_model_package(self, **params: Any) -> dict[str, Any]:
        self._enter("describe_model_package", params)
        return json.loads(json.dumps(self.packages[params["ModelPackageName"]]))

    def update_model_package(self, **params: Any) -> dict[str, Any]:
        self._enter("update_model_package", params)
        package = self.packages[params["ModelPackageArn"]]
        package["ModelApprovalStatus"] = params["ModelApprovalStatus"]
        package["CustomerMetadataProperties"] = dict(params["CustomerMetadataProperties"])
        return {"ModelPackageArn": params["ModelPackageArn"]}

    def writes(self) -> list[tuple[str, dict[str, Any]]]:
        return [(op, p) for op, p in self.log if op.startswith(("create", "update"))]


class Versions:
    """The registry calls of the mirror: versions of model "churn" by number, every change logged."""

    def __init__(self, **statuses: str) -> None:
        self.statuses = {int(k.removeprefix("v")): s for k, s in statuses.items()}
        self.log: list[tuple[Any, ...]] = []

    def get_version(self, name: str, version: int | str) -> VersionInfo:
        number = int(version)
        if name != "churn" or number not in self.statuses:
            raise NotFoundError(f"model {name!r} has no version {number}")
        status = self.statuses[number]
        return VersionInfo(name, number, status, None, None, None, None, None, "", (), {}, 0)

    def set_status(self, name: str, version: int, status: str, **kw: Any) -> VersionInfo:
        self.log.append(("set-status", name, version, status, kw))
        if self.statuses[version] != kw["expected"]:
            raise ConflictError("changed meanwhile")
        self.statuses[version] = status
        return self.get_version(name, version)

    def record_event(self, name: str, version: int, action: str, detail: str, **kw: Any) -> HistoryEvent:
        self.log.append(("event", name, version, action, detail, kw))
        return HistoryEvent("t", kw.get("actor") or "svc", action, name, version, detail, kw["reason"])


def mirror(versions: Versions, sm: SageMaker, **kw: Any) -> SageMakerMirror:
    return SageMakerMirror(versions, sm, **kw)  # type: ignore[arg-type]


def test_a_first_push_creates_the_group_and_a_package_with_every_field_and_records_it() -> None:
    versions, sm = Versions(v2=PENDING), SageMaker()
    result = mirror(versions, sm).push("churn", "2")
    arn = "arn:aws:sagemaker:eu-west-1:1:model-package/churn/1"
    assert result == MirrorResult("churn", 2, "push", PENDING, arn, True, f"registry -> sagemaker: none -> {PENDING}")
    assert sm.writes() == [
        (
            "create_model_package_group",
            {
                "ModelPackageGroupName": "churn",
                "ModelPackageGroupDescription": "hybridml model churn (approval mirrored from the hybridml registry)",
            },
        ),
        (
            "create_model_package",
            {
                "ModelPackageGroupName": "churn",
                "ModelPackageDescription": "hybridml churn version 2",
                "ModelApprovalStatus": PENDING,
                "CustomerMetadataProperties": {META_MODEL: "churn", META_VERSION: "2", META_MIRRORED: PENDING},
            },
        ),
    ]
    reason = '{"group":"churn","package":"' + arn + '","previous":"none"}'
    assert versions.log == [
        ("event", "churn", 2, "mirror", f"registry -> sagemaker: none -> {PENDING}", {"reason": reason, "actor": None})
    ]


def test_a_push_with_nothing_to_change_writes_and_records_nothing() -> None:
    versions, sm = Versions(v1=APPROVED), SageMaker()
    arn = sm.add_package("churn", APPROVED, {META_VERSION: "1", META_MIRRORED: APPROVED})
    result = mirror(versions, sm).push("churn", 1, actor="ann")
    assert result == MirrorResult(
        "churn", 1, "none", APPROVED, arn, False, f"SageMaker model package already {APPROVED}"
    )
    assert sm.writes() == [] and versions.log == []


def test_a_push_of_a_changed_status_updates_the_package_keeping_its_other_metadata() -> None:
    versions, sm = Versions(v1=PENDING, v2=APPROVED), SageMaker(page_size=1)
    sm.add_package("churn", PENDING, None)  # a package made elsewhere, without metadata: skipped
    sm.add_package("churn", PENDING, {META_VERSION: "1", META_MIRRORED: PENDING})
    arn = sm.add_package("churn", PENDING, {META_VERSION: "2", META_MIRRORED: PENDING, "team": "risk"})
    result = mirror(versions, sm).push("churn", 2, actor="ann")
    assert result == MirrorResult(
        "churn", 2, "push", APPROVED, arn, True, f"registry -> sagemaker: {PENDING} -> {APPROVED}"
    )
    assert sm.writes() == [
        (
            "update_model_package",
            {
                "ModelPackageArn": arn,
                "ModelApprovalStatus": APPROVED,
                "ApprovalDescription": "mirrored from the hybridml registry (churn version 2)",
                "CustomerMetadataProperties": {
                    "team": "risk",
                    META_MODEL: "churn",
                    META_VERSION: "2",
                    META_MIRRORED: APPROVED,
                },
            },
        )
    ]
    # The group existed: not created. Three packages in pages of one: each page asked for by its token.
    assert [p.get("NextToken") for op, p in sm.log if op == "list_model_packages"] == [None, "1", "2"]
    assert "NextToken" not in next(p for op, p in sm.log if op == "list_model_packages")
    assert versions.log[-1][5] == {
        "reason": f'{{"group":"churn","package":"{arn}","previous":"{PENDING}"}}',
        "actor": "ann",
    }


def test_a_push_of_a_version_without_a_package_in_a_full_group_creates_one() -> None:
    versions, sm = Versions(v3=REJECTED), SageMaker(page_size=2)
    for n in (1, 2):
        sm.add_package("churn", APPROVED, {META_VERSION: str(n), META_MIRRORED: APPROVED})
    result = mirror(versions, sm).push("churn", 3)
    assert (result.direction, result.status, result.changed) == ("push", REJECTED, True)
    assert [op for op, _ in sm.writes()] == ["create_model_package"]
    assert sm.packages[result.package_arn]["CustomerMetadataProperties"][META_VERSION] == "3"


def test_push_and_pull_refuse_bad_names_and_missing_versions_before_calling_sagemaker() -> None:
    versions, sm = Versions(v1=PENDING), SageMaker()
    m = mirror(versions, sm)
    for call in (m.push, m.pull):
        with pytest.raises(InvalidInputError, match="invalid model name 'Bad Name'"):
            call("Bad Name", 1)
        with pytest.raises(NotFoundError, match="no version 4"):
            call("churn", 4)
    assert sm.log == []


def test_pulling_a_version_never_pushed_is_not_found_naming_the_group() -> None:
    versions, sm = Versions(v1=PENDING), SageMaker()
    with pytest.raises(NotFoundError) as caught:
        mirror(versions, sm).pull("churn", 1)
    assert str(caught.value) == "churn version 1 has no model package in SageMaker group 'churn' (push it first)"
    sm.groups["churn"] = ""  # a group without this version's package
    with pytest.raises(NotFoundError) as caught:
        mirror(versions, sm).pull("churn", 1)
    assert str(caught.value).startswith("churn version 1 has no model package")


def test_a_pull_when_both_sides_agree_changes_nothing() -> None:
    versions, sm = Versions(v1=APPROVED), SageMaker()
    arn = sm.add_package("churn", APPROVED, {META_VERSION: "1", META_MIRRORED: PENDING})
    assert mirror(versions, sm).pull("churn", 1) == MirrorResult(
        "churn", 1, "none", APPROVED, arn, False, f"both sides are {APPROVED}"
    )
    assert versions.log == [] and sm.writes() == []


def test_a_pull_of_the_status_last_pushed_leaves_the_newer_registry_status() -> None:
    versions, sm = Versions(v1=APPROVED), SageMaker()
    arn = sm.add_package("churn", PENDING, {META_VERSION: "1", META_MIRRORED: PENDING})
    detail = f"SageMaker still has {PENDING}, as last pushed; the registry's {APPROVED} is newer (push it)"
    assert mirror(versions, sm).pull("churn", 1) == MirrorResult("churn", 1, "none", APPROVED, arn, False, detail)
    assert versions.log == [] and sm.writes() == []


@pytest.mark.parametrize("mirrored", ["Unknown", None])
def test_a_pull_of_a_status_the_registry_has_no_word_for_changes_nothing(mirrored: str | None) -> None:
    versions, sm = Versions(v1=APPROVED), SageMaker()
    metadata = {META_VERSION: "1"} | ({META_MIRRORED: mirrored} if mirrored else {})
    arn = sm.add_package("churn", "Unknown", metadata)
    detail = "SageMaker status 'Unknown' has no registry equivalent"
    assert mirror(versions, sm).pull("churn", 1) == MirrorResult("churn", 1, "none", APPROVED, arn, False, detail)
    assert versions.log == [] and sm.writes() == []


def test_a_status_set_on_aws_is_pulled_as_a_compare_and_set_and_recorded() -> None:
    versions, sm = Versions(v1=PENDING), SageMaker()
    note = "  looked at\n the   ROC curve " + "x" * 300
    arn = sm.add_package(
        "churn", APPROVED, {META_VERSION: "1", META_MIRRORED: PENDING, "team": "risk"}, ApprovalDescription=note
    )
    result = mirror(versions, sm).pull("churn", "1")
    detail = f"sagemaker -> registry: {PENDING} -> {APPROVED}"
    assert result == MirrorResult("churn", 1, "pull", APPROVED, arn, True, detail)
    shown = ("looked at the ROC curve " + "x" * 300)[:200]
    assert versions.log == [
        (
            "set-status",
            "churn",
            1,
            APPROVED,
            {
                "reason": f"set in SageMaker model package {arn} (group churn): {shown}",
                "actor": MIRROR_ACTOR,
                "expected": PENDING,
            },
        ),
        (
            "event",
            "churn",
            1,
            "mirror",
            detail,
            {"reason": f'{{"group":"churn","package":"{arn}","previous":"{PENDING}"}}', "actor": MIRROR_ACTOR},
        ),
    ]
    assert sm.writes() == [
        (
            "update_model_package",
            {
                "ModelPackageArn": arn,
                "ModelApprovalStatus": APPROVED,
                "CustomerMetadataProperties": {META_VERSION: "1", META_MIRRORED: APPROVED, "team": "risk"},
            },
        )
    ]


def test_a_pull_without_a_note_gives_a_plain_reason_and_keeps_the_named_actor() -> None:
    versions, sm = Versions(v1=APPROVED), SageMaker()
    arn = sm.add_package("churn", REJECTED, {META_VERSION: "1", META_MIRRORED: APPROVED}, ApprovalDescription=" \n ")
    mirror(versions, sm).pull("churn", 1, actor="ann")
    assert versions.log[0][4] == {
        "reason": f"set in SageMaker model package {arn} (group churn)",
        "actor": "ann",
        "expected": APPROVED,
    }
    assert versions.log[1][5]["actor"] == "ann"
    assert versions.statuses[1] == REJECTED


def test_a_pull_of_a_package_without_an_approval_description_gives_a_plain_reason() -> None:
    versions, sm = Versions(v1=PENDING), SageMaker()
    arn = sm.add_package("churn", REJECTED, {META_VERSION: "1", META_MIRRORED: PENDING})
    mirror(versions, sm).pull("churn", 1)
    assert versions.log[0][4]["reason"] == f"set in SageMaker model package {arn} (group churn)"


def test_a_pull_that_loses_to_a_registry_change_writes_nothing_to_sagemaker() -> None:
    versions, sm = Versions(v1=PENDING), SageMaker()
    sm.add_package("churn", APPROVED, {META_VERSION: "1", META_MIRRORED: PENDING})
    m = mirror(versions, sm)
    original = versions.get_version

    def stale(name: str, version: int | str) -> VersionInfo:
        info = original(name, version)
        versions.statuses[1] = REJECTED  # another approver decided meanwhile
        return info

    versions.get_version = stale  # type: ignore[method-assign]
    with pytest.raises(ConflictError):
        m.pull("churn", 1)
    assert sm.writes() == []


def test_throttled_calls_are_retried_with_the_mirrors_sleep_and_attempts() -> None:
    versions, sm = Versions(v1=PENDING), SageMaker()
    slept: list[float] = []
    sm.throttle["describe_model_package_group"] = 2
    assert mirror(versions, sm, sleep=slept.append, max_attempts=3).push("churn", 1).changed
    assert slept == [0.5, 1.0]
    sm.throttle["list_model_packages"] = 2
    with pytest.raises(NotReadyError, match="still throttled after 2 attempts"):
        mirror(versions, sm, sleep=slept.append, max_attempts=2).pull("churn", 1)


def test_other_sagemaker_refusals_are_mapped_not_hidden() -> None:
    versions, sm = Versions(v1=PENDING), SageMaker()

    def refuse(**params: Any) -> None:
        raise client_error("AccessDeniedException", "no role")

    sm.create_model_package_group = refuse  # type: ignore[method-assign]
    with pytest.raises(HybridmlError, match="CreateModelPackageGroup failed: AccessDeniedException: no role"):
        mirror(versions, sm).push("churn", 1)
