"""The committed IR YAML is exactly what the pipeline compiles to today."""

from __future__ import annotations

from pathlib import Path

import yaml

from hybridml.pipelines.training import COMPILED, compile_to


def _load(path: Path = COMPILED) -> dict:
    """The pipeline spec, with the Kubernetes platform config (the file's second document) under ``platforms``."""
    spec, platform = yaml.safe_load_all(path.read_text())
    return {**spec, **platform}


def test_committed_yaml_equals_a_fresh_compile(tmp_path: Path) -> None:
    fresh = compile_to(tmp_path / "fresh.yaml")
    assert COMPILED.is_file(), "run `make compile` and commit the YAML"
    assert fresh.read_text() == COMPILED.read_text(), "pipeline changed: run `make compile` and commit the YAML"


def test_compiled_pipeline_has_both_branches_and_the_gate() -> None:
    spec = _load()
    text = COMPILED.read_text()
    tasks = spec["root"]["dag"]["tasks"]
    assert "preprocess" in tasks
    assert "train" in tasks
    assert "evaluate" in tasks
    assert "roc-meets-threshold" in text
    assert "roc-below-threshold" in text
    assert spec["root"]["inputDefinitions"]["parameters"]["threshold"]["defaultValue"] == 0.75
    executors = spec["deploymentSpec"]["executors"]
    assert all(e["container"]["image"].startswith("ghcr.io/hybridml/") for e in executors.values())
    # No executor installs packages at run time: the image carries hybridml and kfp.
    assert not any("pip install" in " ".join(e["container"].get("command", [])) for e in executors.values())


def _cached_tasks(spec: dict) -> set[str]:
    """Names of the tasks, at any depth of the DAG, that Kubeflow may serve from its cache."""
    found: set[str] = set()
    dags = [spec["root"]["dag"], *(c["dag"] for c in spec["components"].values() if "dag" in c)]
    for dag in dags:
        found |= {name for name, task in dag["tasks"].items() if task.get("cachingOptions", {}).get("enableCache")}
    return found


def test_no_step_is_cached_by_default() -> None:
    assert _cached_tasks(_load()) == set()


def test_cache_preprocess_caches_preprocess_and_nothing_else(tmp_path: Path) -> None:
    spec = _load(compile_to(tmp_path / "cached.yaml", cache_preprocess=True))
    assert _cached_tasks(spec) == {"preprocess"}


def test_the_sagemaker_bridge_runs_only_for_approved_versions_and_only_when_given() -> None:
    spec = _load()
    assert spec["root"]["inputDefinitions"]["parameters"]["sagemaker_bridge"] == {
        "defaultValue": "",
        "isOptional": True,
        "parameterType": "STRING",
    }
    components = spec["components"]
    holders = [n for n, c in components.items() if "sagemaker-bridge" in c.get("dag", {}).get("tasks", {})]
    assert len(holders) == 1  # one bridge task, in one condition
    (bridge_on,) = holders
    task = components[bridge_on]["dag"]["tasks"]["sagemaker-bridge"]
    assert task["inputs"]["parameters"]["bridge"] == {"componentInputParameter": "pipelinechannel--sagemaker_bridge"}
    assert "enableCache" not in task["cachingOptions"]
    # The condition holding the bridge is "bridge given", nested in the "approved" condition beside deploy.
    (approved,) = [c for c in components.values() if "deploy" in c.get("dag", {}).get("tasks", {})]
    inner = approved["dag"]["tasks"][bridge_on.removeprefix("comp-")]
    assert inner["taskInfo"]["name"] == "sagemaker-bridge-on"
    assert inner["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--sagemaker_bridge'] != ''"
    outer = next(
        t for c in components.values() for t in c.get("dag", {}).get("tasks", {}).values()
        if t.get("componentRef", {}).get("name") == next(n for n, c in components.items() if c is approved)
    )  # fmt: skip
    assert outer["taskInfo"]["name"] == "approved"
    assert "== 'Approved'" in outer["triggerPolicy"]["condition"]


MLFLOW, AWS = "hybridml-mlflow-credentials", "hybridml-aws-credentials"


def _executor_of(spec: dict, component: str) -> str:
    return str(spec["components"][component]["executorLabel"])


def test_the_kserve_parameters_reach_the_three_release_steps() -> None:
    spec = _load()
    for name in ("kserve_namespace", "kserve_service_account"):
        assert spec["root"]["inputDefinitions"]["parameters"][name] == {
            "defaultValue": "",
            "isOptional": True,
            "parameterType": "STRING",
        }
    (approved,) = [c for c in spec["components"].values() if "deploy" in c.get("dag", {}).get("tasks", {})]
    tasks = approved["dag"]["tasks"]
    for step in ("deploy", "wait-ready", "inference"):
        parameters = tasks[step]["inputs"]["parameters"]
        for name in ("kserve_namespace", "kserve_service_account", "deploy_config", "target"):
            channel = "deploy_target" if name == "target" else name
            assert parameters[name] == {"componentInputParameter": f"pipelinechannel--{channel}"}, (step, name)


def test_pods_get_the_deployer_label_and_the_optional_credential_secrets() -> None:
    spec = _load()
    platform = spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    release = {_executor_of(spec, f"comp-{c}") for c in ("deploy", "wait-ready", "inference", "sagemaker-bridge")}
    labelled = {name for name, cfg in platform.items() if "podMetadata" in cfg}
    assert labelled == release
    for name in release:
        assert platform[name]["podMetadata"] == {"labels": {"hybridml.dev/role": "deployer"}}

    def secret(name: str, keys: tuple[str, ...]) -> dict:
        return {
            "keyToEnv": [{"envVar": k, "secretKey": k} for k in keys],
            "optional": True,
            "secretName": name,
            "secretNameParameter": {"runtimeValue": {"constant": name}},
        }

    mlflow = secret(MLFLOW, ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"))
    aws = secret(AWS, ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"))
    # Exactly the steps that talk to MLflow (they take tracking_uri) get its credentials; only the bridge AWS keys.
    tracked = {
        c["executorLabel"]
        for c in spec["components"].values()
        if "executorLabel" in c and "tracking_uri" in c.get("inputDefinitions", {}).get("parameters", {})
    }
    assert {"exec-preprocess", "exec-register", "exec-approve", "exec-deploy", "exec-summarize"} <= tracked
    assert not {"exec-wait-ready", "exec-inference"} & tracked
    bridge = _executor_of(spec, "comp-sagemaker-bridge")
    for name in spec["deploymentSpec"]["executors"]:
        wanted = ([aws] if name == bridge else []) + ([mlflow] if name in tracked else [])
        mine = [s for s in platform.get(name, {}).get("secretAsEnv", []) if s["secretName"] in (MLFLOW, AWS)]
        assert mine == wanted, name


def test_hpo_fans_out_over_parallel_workers_sharing_one_study() -> None:
    plan_spec, platform = yaml.safe_load_all(COMPILED.read_text())
    assert plan_spec["root"]["inputDefinitions"]["parameters"]["hpo_workers"] == {
        "defaultValue": 1.0,
        "isOptional": True,
        "parameterType": "NUMBER_INTEGER",
    }
    components = plan_spec["components"]
    (below,) = [c["dag"]["tasks"] for c in components.values() if "hpo-plan" in c.get("dag", {}).get("tasks", {})]
    assert "hpo" not in below  # the single search step is gone
    (loop_name,) = [n for n, t in below.items() if t["taskInfo"]["name"] == "hpo-workers"]
    loop = below[loop_name]
    assert loop["parameterIterator"] == {
        "itemInput": "pipelinechannel--hpo-plan-Output-loop-item",
        "items": {"inputParameter": "pipelinechannel--hpo-plan-Output"},
    }
    assert loop["dependentTasks"] == ["hpo-plan"]
    assert sorted(below["hpo-best"]["dependentTasks"]) == sorted([loop_name, "hpo-plan"])  # after every worker
    assert below["hpo-plan"]["inputs"]["parameters"]["workers"] == {
        "componentInputParameter": "pipelinechannel--hpo_workers"
    }
    (worker,) = components[loop["componentRef"]["name"]]["dag"]["tasks"].values()
    assert worker["taskInfo"]["name"] == "hpo worker"
    # A lost worker pod is retried (it resumes the shared study); the plan and best steps are not.
    assert worker["retryPolicy"] == {
        "backoffDuration": "30s",
        "backoffFactor": 2.0,
        "backoffMaxDuration": "3600s",
        "maxRetryCount": 2,
    }
    assert "retryPolicy" not in below["hpo-plan"] and "retryPolicy" not in below["hpo-best"]
    item = "pipelinechannel--hpo-plan-Output-loop-item"
    for param, key in {"worker": "worker", "storage": "storage", "study_name": "study", "run_id": "run_id"}.items():
        assert worker["inputs"]["parameters"][param] == {
            "componentInputParameter": item,
            "parameterExpressionSelector": f'parseJson(string_value)["{key}"]',
        }
    # Each HPO pod gets the Optuna password as PGPASSWORD, when the Secret is there; no other step gets it.
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for step in ("exec-hpo-plan", "exec-hpo-worker", "exec-hpo-best"):
        assert {
            "keyToEnv": [{"envVar": "PGPASSWORD", "secretKey": "password"}],
            "optional": True,
            "secretName": "hybridml-postgresql",
            "secretNameParameter": {"runtimeValue": {"constant": "hybridml-postgresql"}},
        } in executors[step]["secretAsEnv"]
    assert not any(
        e.get("keyToEnv") == [{"envVar": "PGPASSWORD", "secretKey": "password"}]
        for name, spec in executors.items()
        if not name.startswith("exec-hpo-")
        for e in spec.get("secretAsEnv", [])
    )
