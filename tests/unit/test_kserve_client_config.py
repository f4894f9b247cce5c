"""Where the kserve target finds its cluster (kubeconfig given, else in-cluster, else the default kubeconfig) and
how the pipeline's kserve parameters reach its configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hybridml.deploy.config import KServeConfig
from hybridml.deploy.kserve.target import load_api_client
from hybridml.errors import InvalidInputError

pytest.importorskip("kubernetes")
from kubernetes.config import incluster_config


def _kubeconfig(path: Path, server: str, token: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": token}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


@pytest.fixture
def no_pod(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    return monkeypatch


def test_outside_a_pod_kubeconfig_is_read_when_the_target_is_built_not_at_import(
    no_pod: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The library fixes its default path at import; a warm step process gets its environment later.
    no_pod.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "late", "https://late.example:6443", "t-late")))
    api = load_api_client(KServeConfig())
    assert api.configuration.host == "https://late.example:6443"
    assert api.configuration.api_key == {"authorization": "Bearer t-late"}


def test_a_named_kubeconfig_wins_over_kubeconfig_env(no_pod: pytest.MonkeyPatch, tmp_path: Path) -> None:
    no_pod.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "env", "https://env.example:6443", "t-env")))
    named = _kubeconfig(tmp_path / "named", "https://named.example:6443", "t-named")
    assert load_api_client(KServeConfig(kubeconfig=str(named))).configuration.host == "https://named.example:6443"


def test_in_a_pod_the_service_account_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("sa-token")
    ca.write_text("not checked until a request is made")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(ca))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "env", "https://env.example:6443", "t-env")))
    api = load_api_client(KServeConfig())
    assert api.configuration.host == "https://10.0.0.1:443"
    assert api.configuration.api_key == {"authorization": "bearer sa-token"}
    assert api.configuration.ssl_ca_cert == str(ca)


def test_no_configuration_at_all_is_one_clear_line(no_pod: pytest.MonkeyPatch, tmp_path: Path) -> None:
    no_pod.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(InvalidInputError, match=r"^kserve target: no usable Kubernetes configuration \(in-cluster"):
        load_api_client(KServeConfig())


def test_the_pipeline_parameters_set_the_namespace_and_predictor_account_over_deploy_config(
    no_pod: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from hybridml.steps import release

    kubeconfig = _kubeconfig(tmp_path / "k", "https://k.example:6443", "t")
    config = json.dumps(
        {"target": "kserve", "namespace": "from-config", "service_account": "cfg-sa", "kubeconfig": str(kubeconfig)}
    )
    given = release.deploy_target(
        "kserve", str(tmp_path), config, kserve_namespace="team-a", kserve_service_account="model-reader"
    )
    assert (given.config.namespace, given.config.service_account) == ("team-a", "model-reader")  # type: ignore[attr-defined]
    kept = release.deploy_target("", str(tmp_path), config, kserve_namespace="", kserve_service_account="")
    assert (kept.config.namespace, kept.config.service_account) == ("from-config", "cfg-sa")  # type: ignore[attr-defined]
    bad = r"^kserve deploy config: namespace must be a Kubernetes namespace name, got 'Not_A_Namespace'$"
    with pytest.raises(InvalidInputError, match=bad):
        release.deploy_target("kserve", str(tmp_path), config, kserve_namespace="Not_A_Namespace")
    # The other targets ignore them (a cluster default may set them for every run).
    local = release.deploy_target("local", str(tmp_path), "", kserve_namespace="team-a", kserve_service_account="x")
    assert local.target_name == "local"
