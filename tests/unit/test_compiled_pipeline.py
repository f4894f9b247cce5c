"""The committed IR YAML is exactly what the pipeline compiles to today."""

from __future__ import annotations

from pathlib import Path

import yaml

from hybridml.pipelines.training import COMPILED, compile_to


def test_committed_yaml_equals_a_fresh_compile(tmp_path: Path) -> None:
    fresh = compile_to(tmp_path / "fresh.yaml")
    assert COMPILED.is_file(), "run `make compile` and commit the YAML"
    assert fresh.read_text() == COMPILED.read_text(), "pipeline changed: run `make compile` and commit the YAML"


def test_compiled_pipeline_has_both_branches_and_the_gate() -> None:
    spec = yaml.safe_load(COMPILED.read_text())
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
    assert _cached_tasks(yaml.safe_load(COMPILED.read_text())) == set()


def test_cache_preprocess_caches_preprocess_and_nothing_else(tmp_path: Path) -> None:
    spec = yaml.safe_load(compile_to(tmp_path / "cached.yaml", cache_preprocess=True).read_text())
    assert _cached_tasks(spec) == {"preprocess"}


def test_the_sagemaker_bridge_runs_only_for_approved_versions_and_only_when_given() -> None:
    spec = yaml.safe_load(COMPILED.read_text())
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
