"""In a Kubernetes pod, state on the pod's own disk is refused before anything is written (issue 13, part 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridml.errors import InvalidInputError
from hybridml.steps.cluster import check_durable, effective_target, in_cluster_pod

KFP = {"KFP_POD_NAME": "hybridml-run-abc-preprocess"}
POD = {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}


@pytest.fixture
def token(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("sa-token")
    return path


def test_what_counts_as_a_cluster_pod(token: Path, tmp_path: Path) -> None:
    no_token = tmp_path / "absent"
    assert in_cluster_pod(KFP, no_token) is True  # a Kubeflow executor pod, whatever else
    assert in_cluster_pod({**KFP, "HYBRIDML_RUN_LOG": "/x"}, no_token) is True
    assert in_cluster_pod(POD, token) is True  # a pod with its service account
    assert in_cluster_pod(POD, no_token) is False  # the service host alone is not enough
    assert in_cluster_pod({**POD, "HYBRIDML_RUN_LOG": "/x"}, token) is False  # the local runner in a notebook pod
    assert in_cluster_pod({}, token) is False
    assert in_cluster_pod({**KFP, "HYBRIDML_ALLOW_POD_LOCAL_STATE": "1"}, token) is False  # a shared volume
    assert in_cluster_pod({**KFP, "HYBRIDML_ALLOW_POD_LOCAL_STATE": "yes"}, token) is True  # only "1" turns it off


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"tracking_uri": "sqlite:////home/hybridml/.hybridml/mlflow.db"},
            "the MLflow store 'sqlite:////home/hybridml/.hybridml/mlflow.db' would be a new, empty one in every step;"
            " set the pipeline parameter tracking_uri to your MLflow server",
        ),
        ({"tracking_uri": ""}, "the MLflow store '(default SQLite file)' would be"),
        ({"tracking_uri": "file:///tmp/mlruns"}, "set the pipeline parameter tracking_uri"),
        ({"tracking_uri": "/tmp/mlruns"}, "set the pipeline parameter tracking_uri"),
        (
            {"hpo_storage": ""},
            "the Optuna storage '(in memory)' would lose the study when the HPO step is retried;"
            " set the pipeline parameter hpo_storage to a shared database",
        ),
        ({"hpo_storage": "SQLITE:///optuna.db"}, "set the pipeline parameter hpo_storage"),
        (
            {"deploy_target": "local"},
            "the local deploy target would start the model server inside this step and stop it with the pod;"
            " set the pipeline parameter deploy_target to kserve or sagemaker",
        ),
        ({"deploy_target": ""}, "set the pipeline parameter deploy_target"),
        # The first lost setting is named: tracking before storage before target.
        ({"tracking_uri": "", "hpo_storage": "", "deploy_target": "local"}, "tracking_uri"),
        ({"tracking_uri": "http://mlflow:5000", "hpo_storage": "", "deploy_target": "local"}, "hpo_storage"),
    ],
)
def test_each_lost_setting_is_refused_in_one_line_naming_its_parameter(
    token: Path, kwargs: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidInputError) as info:
        check_durable(**kwargs, env=KFP, token=token)
    text = str(info.value)
    assert text.startswith("this step runs in a Kubernetes pod, whose disk is its own and ends with it: ")
    assert message in text and "\n" not in text


def test_durable_settings_and_unchecked_ones_pass(token: Path) -> None:
    check_durable(
        tracking_uri="http://mlflow.hybridml.svc.cluster.local:5000",
        hpo_storage="postgresql+psycopg2://optuna@postgres/optuna",
        deploy_target="kserve",
        env=KFP,
        token=token,
    )
    check_durable(env=KFP, token=token)  # None: not checked
    check_durable(deploy_target="sagemaker", env=KFP, token=token)
    # Off the cluster, the embedded defaults are what a laptop wants.
    check_durable(tracking_uri="", hpo_storage="", deploy_target="local", env={}, token=token)


def test_a_password_in_a_refused_uri_is_not_shown(token: Path) -> None:
    with pytest.raises(InvalidInputError) as info:
        check_durable(hpo_storage="sqlite://user:hunter2@/optuna.db", env=KFP, token=token)
    assert "hunter2" not in str(info.value) and "***" in str(info.value)


def test_the_effective_target_comes_from_the_parameter_then_the_config() -> None:
    assert effective_target("kserve", '{"target": "sagemaker"}') == "kserve"
    assert effective_target("", '{"target": "sagemaker"}') == "sagemaker"
    assert effective_target("", "") == "local"
    assert effective_target("", "state_dir: /x") == "local"
