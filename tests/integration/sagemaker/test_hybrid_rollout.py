"""The hybrid rollout over two real targets: the local predictor and the SageMaker target on moto.

moto plus the container bridge (tests/integration/sagemaker/container_bridge.py): UpdateEndpoint is emulated and
InvokeEndpoint answered by the project's predictor in SageMaker mode on the uploaded ``model.tar.gz``, so the
parity check compares real scores from two real servers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from hybridml.deploy import LocalConfig, make_target, model_ref
from hybridml.deploy.contract import Deployment, ModelRef
from hybridml.deploy.hybrid import HybridRollout, Side, Verdict
from hybridml.deploy.local import LocalTarget
from hybridml.deploy.sagemaker import SageMakerTarget
from hybridml.registry import Registry
from tests.integration.sagemaker.conftest import RegistryHome, SmBundles
from tests.integration.sagemaker.container_bridge import ContainerBridge, emulate_update_endpoint
from tests.integration.sagemaker.motoserver import BUCKET, IMAGE_URI, ROLE_ARN, MotoServer, config


@dataclass
class Bed:
    """Both targets serving v1 of ``name`` (registered twice: versions 1 and 2), and the v2 reference."""

    name: str
    local: LocalTarget
    sagemaker: SageMakerTarget
    registry: Registry
    v2: ModelRef
    fail_next_update: Callable[[str], None]

    def rollout(self, **options: Any) -> HybridRollout:
        sides = [Side("local", self.local), Side("sagemaker", self.sagemaker)]
        return HybridRollout(sides, self.registry, ready_timeout_s=20, actor="rollout-test", **options)

    def hybrid_events(self) -> list[tuple[str, dict[str, Any]]]:
        return [
            (e.detail, json.loads(e.reason))
            for e in self.registry.history(self.name, 2)
            if e.action == "deployment" and e.detail.startswith("hybrid ")
        ]


@pytest.fixture
def bed(
    request: pytest.FixtureRequest,
    aws: MotoServer,
    registry_home: RegistryHome,
    sm_bundles: SmBundles,
    tmp_path: Path,
) -> Iterator[Callable[..., Bed]]:
    made: list[tuple[LocalTarget, SageMakerTarget, ContainerBridge]] = []

    def build(name: str, sagemaker_v2_bundle: Path | None = None) -> Bed:
        registry = Registry(registry_home.tracking_uri, user="alice")
        assert registry_home.register(name) == 1
        # A second version of the same model (another run key: registration is idempotent per key).
        first = registry.get_version(name, 1)
        second = registry.register(name, first.source, run_id=str(first.run_id), run_key=f"{name}/second", tags={})
        assert int(second.version) == 2
        for version in (1, 2):
            registry.set_status(name, version, "Approved", reason="ok")
        v1 = model_ref(name, 1, sm_bundles.v1.as_uri())
        v2 = model_ref(name, 2, sm_bundles.v2.as_uri())

        def fetch(uri: str, scratch: Path) -> Path:
            # A different model behind v2's URI on the SageMaker side only (the parity case).
            if sagemaker_v2_bundle is not None and uri == v2.artifact_uri:
                return sagemaker_v2_bundle
            return Path(uri.removeprefix("file://"))

        local = make_target(LocalConfig(tmp_path / "deployments", start_timeout_s=60))
        sagemaker = make_target(config(ready_timeout_s=20.0), fetch=fetch)
        failing: dict[str, str] = {}

        def update(params: dict[str, Any], **kwargs: Any) -> Any:
            if "reason" in failing:
                from botocore.awsrequest import AWSResponse

                failing["active"] = "yes"  # the next DescribeEndpoint reads Failed; the old config stays
                return AWSResponse(aws.url, 200, {}, None), {"EndpointArn": "arn:aws:sagemaker:failed"}
            return emulate_update_endpoint(aws)(params, **kwargs)

        def described(parsed: dict[str, Any], **_: Any) -> None:
            if failing.pop("active", None):
                parsed["EndpointStatus"] = "Failed"
                parsed["FailureReason"] = failing.pop("reason")

        events = sagemaker.clients.sagemaker.meta.events
        events.register("before-call.sagemaker.UpdateEndpoint", update)
        events.register("after-call.sagemaker.DescribeEndpoint", described)
        bridge = ContainerBridge(aws, tmp_path / f"containers-{name}")
        bridge.attach(sagemaker.clients.runtime)
        made.append((local, sagemaker, bridge))
        for target in (local, sagemaker):
            target.deploy(v1)
        return Bed(name, local, sagemaker, registry, v2, lambda reason: failing.update(reason=reason))

    yield build
    for local, sagemaker, bridge in made:
        bridge.close()
        for target in (local, sagemaker):
            for deployment in target.list():
                target.delete(deployment.name)


def _serving(deployment: Deployment | None) -> tuple[str, str | None, int, bool] | None:
    assert deployment is not None
    return deployment.stable_version, deployment.canary_version, deployment.canary_percent, deployment.ready


def test_both_sides_promoted_after_parity_and_every_transition_recorded(
    bed: Callable[..., Bed], sm_bundles: SmBundles
) -> None:
    b = bed("hyb-ok")
    seen: list[dict[str, Deployment]] = []

    def analysis(canaries: Any) -> Verdict:
        seen.append(dict(canaries))
        return Verdict(True, "canaries healthy", {"errors": 0})

    outcome = b.rollout(canary_percent=10, tolerance=1e-6, analysis=analysis).run(b.v2, sm_bundles.rows)
    assert (outcome.state, outcome.reason, outcome.states) == (
        "promoted",
        "promoted on local and sagemaker",
        ["pending", "canary", "promoted"],
    )
    assert outcome.restore_errors == {}
    assert {k: _serving(v) for k, v in outcome.sides.items()} == {
        "local": ("2", None, 0, True),
        "sagemaker": ("2", None, 0, True),
    }
    # The analysis saw both canaries at 10 %.
    assert [{k: _serving(v) for k, v in s.items()} for s in seen] == [
        {"local": ("1", "2", 10, True), "sagemaker": ("1", "2", 10, True)}
    ]
    assert outcome.parity is not None
    assert (outcome.parity.rows, outcome.parity.ok, outcome.parity.tolerance) == (3, True, 1e-6)
    assert outcome.parity.max_abs_diff <= 1e-6
    # Both sides now answer with v2's scores.
    assert b.local.invoke(b.name, sm_bundles.rows) == pytest.approx(b.sagemaker.invoke(b.name, sm_bundles.rows))
    events = b.hybrid_events()
    assert [d for d, _ in events] == [
        "hybrid local+sagemaker: start -> pending",
        "hybrid local+sagemaker: pending -> canary",
        "hybrid local+sagemaker: canary -> promoted",
    ]
    pending, canary, promoted = (f for _, f in events)
    stable_v1 = {"stable": "1", "canary": None, "percent": 0, "ready": True}
    assert pending == {"version": "2", "canary_percent": 10, "previous": {"local": stable_v1, "sagemaker": stable_v1}}
    on_canary = {"stable": "1", "canary": "2", "percent": 10, "ready": True}
    assert canary == {"sides": {"local": on_canary, "sagemaker": on_canary}}
    assert promoted["parity"]["rows"] == 3 and promoted["parity"]["ok"] is True
    assert promoted["analysis"] == {"reason": "canaries healthy", "errors": 0}
    stable_v2 = {"stable": "2", "canary": None, "percent": 0, "ready": True}
    assert promoted["sides"] == {"local": stable_v2, "sagemaker": stable_v2}
    assert {e.actor for e in b.registry.history(b.name, 2) if e.detail.startswith("hybrid ")} == {"rollout-test"}


def test_a_failed_sagemaker_endpoint_rolls_the_local_side_back_too(
    bed: Callable[..., Bed], sm_bundles: SmBundles
) -> None:
    b = bed("hyb-failed")
    b.fail_next_update("CannotStartContainerError: the primary container did not pass the ping health check")
    outcome = b.rollout(canary_percent=25).run(b.v2, sm_bundles.rows)
    assert (outcome.state, outcome.states, outcome.parity) == ("rolled_back", ["pending", "rolled_back"], None)
    assert outcome.reason.startswith("sagemaker: deploy failed: SageMaker endpoint 'hyb-failed' failed to update")
    assert "CannotStartContainerError: the primary container did not pass the ping health check" in outcome.reason
    assert outcome.restore_errors == {}
    # The local canary, which was up, is gone: both sides serve v1 alone.
    assert {k: _serving(v) for k, v in outcome.sides.items()} == {
        "local": ("1", None, 0, True),
        "sagemaker": ("1", None, 0, True),
    }
    assert _serving(b.local.status(b.name)) == ("1", None, 0, True)
    assert _serving(b.sagemaker.status(b.name)) == ("1", None, 0, True)
    (_, _), (detail, figures) = b.hybrid_events()
    assert detail == "hybrid local+sagemaker: pending -> rolled_back"
    assert figures["why"] == outcome.reason[:300]
    stable_v1 = {"stable": "1", "canary": None, "percent": 0, "ready": True}
    assert figures["sides"] == {"local": stable_v1, "sagemaker": stable_v1}


def test_a_parity_mismatch_rolls_both_back(bed: Callable[..., Bed], sm_bundles: SmBundles) -> None:
    b = bed("hyb-parity", sagemaker_v2_bundle=sm_bundles.logistic)  # SageMaker serves another model as v2
    outcome = b.rollout(canary_percent=10, tolerance=0.001).run(b.v2, sm_bundles.rows)
    assert (outcome.state, outcome.states) == ("rolled_back", ["pending", "canary", "rolled_back"])
    assert outcome.parity is not None and not outcome.parity.ok
    assert outcome.parity.max_abs_diff > 0.001
    assert outcome.reason == (
        f"parity: max |score difference| {outcome.parity.max_abs_diff:.6g} > tolerance 0.001 over 3 rows"
    )
    assert {k: _serving(v) for k, v in outcome.sides.items()} == {
        "local": ("1", None, 0, True),
        "sagemaker": ("1", None, 0, True),
    }
    detail, figures = b.hybrid_events()[-1]
    assert detail == "hybrid local+sagemaker: canary -> rolled_back"
    assert figures["why"] == outcome.reason
    assert figures["parity"]["ok"] is False and figures["parity"]["rows"] == 3
    assert figures["parity"]["max_abs_diff"] == pytest.approx(outcome.parity.max_abs_diff)


def test_the_rollout_command_promotes_on_both_and_refuses_what_it_cannot_roll_out(
    aws: MotoServer,
    registry_home: RegistryHome,
    sm_bundles: SmBundles,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import typer
    from typer.testing import CliRunner

    import hybridml.cli
    import hybridml.deploy.sagemaker.target as sagemaker_target
    from hybridml import cli_hybrid
    from hybridml.config import Settings

    bridge = ContainerBridge(aws, tmp_path / "containers")
    original = sagemaker_target.default_clients

    def clients_on_the_test_bed(region: str | None) -> Any:
        # What moto cannot do (UpdateEndpoint, real inference), done as in the contract suite's harness.
        made = original(region)
        made.sagemaker.meta.events.register("before-call.sagemaker.UpdateEndpoint", emulate_update_endpoint(aws))
        bridge.attach(made.runtime)
        return made

    monkeypatch.setattr(sagemaker_target, "default_clients", clients_on_the_test_bed)
    app = typer.Typer()
    app.callback()(hybridml.cli._root)  # the real root: --home, settings, registry
    app.command("rollout")(cli_hybrid.rollout)
    name, home = "hyb-cli", registry_home.home
    registry = Registry(registry_home.tracking_uri, user="alice")
    assert registry_home.register(name) == 1
    first = registry.get_version(name, 1)
    second = registry.register(name, first.source, run_id=str(first.run_id), run_key=f"{name}/2", tags={})
    assert int(second.version) == 2
    registry.set_status(name, 1, "Approved", reason="ok")
    sm_file = tmp_path / "sagemaker.yaml"
    sm_file.write_text(json.dumps({"role_arn": ROLE_ARN, "bucket": BUCKET, "image_uri": IMAGE_URI, "poll_s": 0.5}))
    rows = tmp_path / "rows.csv"
    pd.DataFrame(sm_bundles.rows).assign(label="x").to_csv(rows, index=False)  # the label column is left out
    local = make_target(LocalConfig(Settings.from_env(home=str(home)).deployments_dir, start_timeout_s=60))
    sm = make_target(config())
    v1 = model_ref(name, 1, sm_bundles.v1.as_uri())
    args = ["--home", str(home), "rollout", "--model", f"{name}/2", "--rows", str(rows), "--with-config", str(sm_file)]
    try:
        for target in (local, sm):
            target.deploy(v1)
        pending = CliRunner().invoke(app, [*args, "--json"])
        assert pending.exit_code == 4
        assert f"{name} version 2 is PendingManualApproval, only Approved versions are rolled out" in pending.stderr
        same = CliRunner().invoke(app, [*args, "--with", "local", "--json"])
        assert same.exit_code == 2 and "--target and --with name the same target 'local'" in same.stderr
        registry.set_status(name, 2, "Approved", reason="ok")
        result = CliRunner().invoke(app, [*args, "--canary", "20", "--timeout", "30", "--json"])
        assert result.exit_code == 0, result.stderr
        payload = json.loads(result.stdout)
        assert (payload["state"], payload["states"], payload["restore_errors"]) == (
            "promoted",
            ["pending", "canary", "promoted"],
            {},
        )
        assert {k: (v["target"], v["stable_version"], v["canary_version"]) for k, v in payload["sides"].items()} == {
            "local": ("local", "2", None),
            "sagemaker": ("sagemaker", "2", None),
        }
        assert payload["parity"]["ok"] is True and payload["parity"]["rows"] == 3
        hybrid = [e.detail for e in registry.history(name, 2) if e.detail.startswith("hybrid ")]
        assert hybrid == [
            "hybrid local+sagemaker: start -> pending",
            "hybrid local+sagemaker: pending -> canary",
            "hybrid local+sagemaker: canary -> promoted",
        ]
    finally:
        bridge.close()
        for target in (local, sm):
            for deployment in target.list():
                target.delete(deployment.name)
