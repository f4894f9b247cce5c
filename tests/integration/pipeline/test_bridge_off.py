"""Without the sagemaker_bridge parameter the run never reaches the bridge step (the shared run, no extra run)."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import Cli


def test_the_sagemaker_bridge_step_is_skipped_when_the_parameter_is_empty(
    cli: Cli, first_run: dict[str, object]
) -> None:
    events = [json.loads(line) for line in (Path(str(first_run["run_dir"])) / "events.jsonl").open()]
    steps = {e["step"] for e in events}
    assert {"deploy", "wait until ready", "inference", "summary"} <= steps  # the approved branch ran
    assert "sagemaker bridge" not in steps
    history = cli.json("models", "history", "hybridml-model")
    assert isinstance(history, list)
    assert not [e for e in history if e["action"] == "mirror" or "sagemaker" in e["detail"]]
