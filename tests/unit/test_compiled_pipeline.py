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
