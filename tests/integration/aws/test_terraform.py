"""infra/aws: every .tf parses (python-hcl2) with the resources and settings the design needs; checkov passes.

checkov runs from its own venv (.tools/checkov, pinned by infra/aws/checkov-requirements.txt): it pins an old boto3,
so it can never be a project dependency. The test installs it when missing and skips, saying why, only if that
install fails (offline).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest
from hcl2.utils import SerializationOptions

from hybridml.aws import eventbridge, stepfunctions

ROOT = Path(__file__).resolve().parents[3]
MODULE = ROOT / "infra" / "aws"
CHECKS = MODULE / "checkov-checks.txt"
CHECKOV_VENV = ROOT / ".tools" / "checkov"
CHECKOV = CHECKOV_VENV / "bin" / "checkov"
UV = ROOT / ".tools" / "bin" / "uv"


@pytest.fixture(scope="module")
def tf() -> dict[str, Any]:
    """Every block of the module: {"resource": {type: {name: body}}, "data": ..., "variable": ..., "output": ...}."""
    merged: dict[str, Any] = {"resource": {}, "data": {}, "variable": {}, "output": {}, "terraform": [], "locals": []}
    files = sorted(MODULE.glob("*.tf"))
    assert [f.name for f in files] == [
        "alarms.tf", "eventbridge.tf", "iam.tf", "outputs.tf", "stepfunctions.tf", "storage.tf", "variables.tf",
        "versions.tf",
    ]  # fmt: skip
    for path in files:
        with path.open() as handle:
            parsed = _legacy(hcl2.load(handle, serialization_options=OPTIONS))
        for kind in ("resource", "data"):
            for block in parsed.get(kind, []):
                for rtype, named in block.items():
                    for name, body in named.items():
                        assert name not in merged[kind].setdefault(rtype, {}), f"{rtype}.{name} defined twice"
                        merged[kind][rtype][name] = body
        for kind in ("variable", "output"):
            for block in parsed.get(kind, []):
                merged[kind].update(block)
        merged["terraform"] += parsed.get("terraform", [])
        merged["locals"] += parsed.get("locals", [])
    return merged


# python-hcl2 8 marks blocks and keeps attribute values bare; the tests read the classic shape, where every block
# is a list of bodies and every attribute value a one-item list (as `hcl2.load` gave before version 7).
OPTIONS = SerializationOptions(with_comments=False, strip_string_quotes=True, preserve_heredocs=False)


def _is_blocks(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(b, dict) and b.get("__is_block__") for b in value)


def _body(block: dict[str, Any]) -> dict[str, Any]:
    return {
        key: [_body(b) for b in value] if _is_blocks(value) else [value]
        for key, value in block.items()
        if not key.startswith("__")
    }


def _labelled(block: dict[str, Any]) -> Any:
    """A labelled block ({label: {label: body}}) down to its body, every level kept."""
    if block.get("__is_block__"):
        return _body(block)
    return {label: _labelled(inner) for label, inner in block.items() if not label.startswith("__")}


def _legacy(parsed: dict[str, Any]) -> dict[str, Any]:
    return {kind: [_labelled(b) for b in blocks] for kind, blocks in parsed.items() if not kind.startswith("__")}


def _one(value: list[Any]) -> Any:
    (item,) = value
    return item


def _statements(tf: dict[str, Any], document: str) -> dict[str, dict[str, Any]]:
    body = tf["data"]["aws_iam_policy_document"][document]
    return {_one(s.get("sid", [f"#{i}"])): s for i, s in enumerate(body["statement"])}


def test_provider_and_tool_versions_are_pinned(tf: dict[str, Any]) -> None:
    (block,) = tf["terraform"]
    aws = _one(_one(block["required_providers"])["aws"])
    assert aws == {"source": "hashicorp/aws", "version": "= 5.82.2"}
    assert block["required_version"] == [">= 1.6.0"]


def test_bucket_is_private_versioned_and_kms_encrypted(tf: dict[str, Any]) -> None:
    res = tf["resource"]
    block = res["aws_s3_bucket_public_access_block"]["artifacts"]
    for setting in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
        assert block[setting] == [True], setting
    assert _one(res["aws_s3_bucket_versioning"]["artifacts"]["versioning_configuration"])["status"] == ["Enabled"]
    rule = _one(res["aws_s3_bucket_server_side_encryption_configuration"]["artifacts"]["rule"])
    default = _one(rule["apply_server_side_encryption_by_default"])
    assert default == {"sse_algorithm": ["aws:kms"], "kms_master_key_id": ["${aws_kms_key.hybridml.arn}"]}
    assert res["aws_kms_key"]["hybridml"]["enable_key_rotation"] == [True]
    assert res["aws_s3_bucket_notification"]["artifacts"]["eventbridge"] == [True]


def test_ecr_scans_on_push_with_immutable_tags(tf: dict[str, Any]) -> None:
    repo = tf["resource"]["aws_ecr_repository"]["predictor"]
    assert repo["image_tag_mutability"] == ["IMMUTABLE"]
    assert _one(repo["image_scanning_configuration"]) == {"scan_on_push": [True]}
    assert _one(repo["encryption_configuration"])["encryption_type"] == ["KMS"]


def test_sagemaker_execution_role_is_least_privilege(tf: dict[str, Any]) -> None:
    statements = _statements(tf, "sagemaker_execution")
    bucket = "${aws_s3_bucket.artifacts.arn}"
    expected = {
        "ReadModelArtifacts": (["s3:GetObject"], [f"{bucket}/${{var.model_prefix}}*"]),
        "ReadNewData": (["s3:GetObject"], [f"{bucket}/${{var.data_prefix}}*"]),
        "ListOwnPrefixes": (["s3:ListBucket"], [bucket]),
        "WriteTrainingOutput": (["s3:PutObject"], [f"{bucket}/training-output/*"]),
        "DecryptArtifacts": (["kms:Decrypt", "kms:GenerateDataKey"], ["${aws_kms_key.hybridml.arn}"]),
        "PullImage": (
            ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
            ["${aws_ecr_repository.predictor.arn}"],
        ),
        "EcrLogin": (["ecr:GetAuthorizationToken"], ["*"]),
        "WriteLogs": (
            ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            ["arn:${local.partition}:logs:${var.region}:${local.account}:log-group:/aws/sagemaker/*"],
        ),
        "PutMetrics": (["cloudwatch:PutMetricData"], ["*"]),
    }
    assert {sid: (_one(s["actions"]), _one(s["resources"])) for sid, s in statements.items()} == expected
    # "*" resources only where AWS has no resource-level permission, and then under a condition or for login only.
    assert _one(statements["PutMetrics"]["condition"])["variable"] == ["cloudwatch:namespace"]
    assume = _one(tf["data"]["aws_iam_policy_document"]["sagemaker_assume"]["statement"])
    assert _one(assume["principals"]) == {"type": ["Service"], "identifiers": [["sagemaker.amazonaws.com"]]}


def test_step_functions_role_drives_only_this_endpoint_and_passes_only_the_execution_role(tf: dict[str, Any]) -> None:
    statements = _statements(tf, "states")
    deploy = statements["DeployFlow"]
    assert set(_one(deploy["actions"])) == {
        "sagemaker:CreateModel", "sagemaker:CreateEndpointConfig", "sagemaker:CreateEndpoint",
        "sagemaker:DescribeEndpoint", "sagemaker:AddTags",
    }  # fmt: skip
    assert all("${var.endpoint_name}" in r for r in _one(deploy["resources"]))
    pass_role = statements["PassExecutionRole"]
    assert _one(pass_role["resources"]) == ["${aws_iam_role.sagemaker_execution.arn}"]
    assert _one(pass_role["condition"])["values"] == [["sagemaker.amazonaws.com"]]
    events = _statements(tf, "events")["StartRetrainRun"]
    assert (_one(events["actions"]), _one(events["resources"])) == (
        ["states:StartExecution"], ["${aws_sfn_state_machine.retrain.arn}"]
    )  # fmt: skip


def test_state_machines_read_the_exported_definitions(tf: dict[str, Any]) -> None:
    machines = tf["resource"]["aws_sfn_state_machine"]
    for name in ("deploy", "retrain"):
        machine = machines[name]
        assert machine["definition"] == [f'${{file("${{path.module}}/definitions/{name}.asl.json")}}']
        assert (MODULE / "definitions" / f"{name}.asl.json").is_file()
        assert machine["role_arn"] == ["${aws_iam_role.states.arn}"]
        assert _one(machine["tracing_configuration"]) == {"enabled": [True]}
        assert _one(machine["logging_configuration"])["level"] == ["ERROR"]
    group = tf["resource"]["aws_sagemaker_model_package_group"]["models"]
    assert group["model_package_group_name"] == ["${var.model_package_group}"]


def test_eventbridge_rule_matches_the_python_definition(tf: dict[str, Any]) -> None:
    rule = tf["resource"]["aws_cloudwatch_event_rule"]["retrain"]
    text = _one(rule["event_pattern"])
    assert text.startswith("${jsonencode(") and text.endswith(")}")
    # The HCL object inside jsonencode(...) as JSON: `key = ` becomes `"key": `, references become sample values.
    hcl_object = text[len("${jsonencode(") : -len(")}")]
    pattern = re.sub(r'([{,])\s*"?([\w-]+)"?\s*=\s*', r'\1"\2": ', hcl_object)
    pattern = pattern.replace("aws_s3_bucket.artifacts.id", '"lake"').replace("var.data_prefix", '"new/"')
    assert json.loads(pattern) == eventbridge.event_pattern("lake", "new/")
    target = tf["resource"]["aws_cloudwatch_event_target"]["retrain"]
    assert target["arn"] == ["${aws_sfn_state_machine.retrain.arn}"]
    transformer = _one(target["input_transformer"])
    assert _one(transformer["input_paths"]) == eventbridge.INPUT_PATHS
    template = _one(transformer["input_template"]).replace('\\"', '"')  # the heredoc comes back as an escaped string
    filled = template.replace("<bucket>", '"lake"').replace("<key>", '"new/a.csv"')
    assert set(json.loads(filled)) == {"bucket", "key", *stepfunctions.RETRAIN_INPUT}


def test_rollback_alarms_watch_5xx_and_latency(tf: dict[str, Any]) -> None:
    alarms = tf["resource"]["aws_cloudwatch_metric_alarm"]
    assert {name: (a["namespace"], a["metric_name"]) for name, a in alarms.items()} == {
        "invocation_5xx": (["AWS/SageMaker"], ["Invocation5XXErrors"]),
        "model_latency": (["AWS/SageMaker"], ["ModelLatency"]),
    }
    assert alarms["model_latency"]["extended_statistic"] == ["p99"]
    assert alarms["model_latency"]["threshold"] == ["${var.alarm_latency_p99_ms * 1000}"]
    for alarm in alarms.values():
        assert _one(alarm["dimensions"]) == {"EndpointName": "${var.endpoint_name}", "VariantName": "stable"}
    outputs = tf["output"]
    assert set(outputs) == {
        "bucket", "ecr_repository_url", "sagemaker_execution_role_arn", "model_package_group",
        "deploy_state_machine_arn", "retrain_state_machine_arn", "rollback_alarm_names",
    }  # fmt: skip
    for name, variable in tf["variable"].items():
        assert variable.get("description"), f"variable {name} has no description"


# ------------------------------------------------------------------------------------------------- checkov


@pytest.fixture(scope="module")
def checkov() -> Path:
    if CHECKOV.exists():
        return CHECKOV
    if not UV.exists():
        pytest.skip(f"{UV} is missing (make setup installs it): cannot install checkov")
    try:
        venv = [str(UV), "venv", "-q", "--clear", str(CHECKOV_VENV)]
        subprocess.run(venv, check=True, timeout=120, capture_output=True)
        subprocess.run(
            [str(UV), "pip", "install", "-q", "--python", str(CHECKOV_VENV / "bin" / "python"),
             "-r", str(MODULE / "checkov-requirements.txt")],
            check=True, timeout=600, capture_output=True,
        )  # fmt: skip
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(CHECKOV_VENV, ignore_errors=True)
        pytest.skip(f"checkov could not be installed into {CHECKOV_VENV} (offline?): {exc}")
    return CHECKOV


# Each weakening of a copy of the module: (file, text, replacement, the checks that must then fail).
VERSIONING = 'versioning_configuration {\n    status = "Enabled"'
WEAKENINGS = [
    ("storage.tf", "scan_on_push = true", "scan_on_push = false", {"CKV_AWS_163"}),
    ("storage.tf", '"IMMUTABLE"', '"MUTABLE"', {"CKV_AWS_51"}),
    ("storage.tf", "block_public_policy     = true", "block_public_policy     = false", {"CKV_AWS_54", "CKV2_AWS_6"}),
    ("storage.tf", VERSIONING, VERSIONING.replace("Enabled", "Suspended"), {"CKV_AWS_21"}),
    ("storage.tf", "enable_key_rotation     = true", "enable_key_rotation     = false", {"CKV_AWS_7"}),
    ("stepfunctions.tf", "enabled = true", "enabled = false", {"CKV_AWS_284"}),
    ("stepfunctions.tf", "retention_in_days = var.log_retention_days", "retention_in_days = 30", {"CKV_AWS_338"}),
    # A wildcard action: the wildcard itself, and credentials exposure ("*" includes the credential-reading actions).
    ("iam.tf", 'actions   = ["s3:GetObject"]', 'actions   = ["*"]', {"CKV_AWS_49", "CKV_AWS_107"}),
]


@pytest.fixture(scope="module")
def checkov_results(checkov: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One checkov run over a copy of the module (``aws/``) and a weakened copy (``weak/``)."""
    work = tmp_path_factory.mktemp("checkov")
    shutil.copytree(MODULE, work / "aws", ignore=shutil.ignore_patterns("tools", "*.txt", ".terraform*"))
    shutil.copytree(work / "aws", work / "weak")
    for name, old, new, _ in WEAKENINGS:
        path = work / "weak" / name
        text = path.read_text()
        assert old in text, (name, old)
        path.write_text(text.replace(old, new))
    checks = ",".join(CHECKS.read_text().split())
    done = subprocess.run(
        [str(checkov), "-d", str(work), "--framework", "terraform", "--check", checks, "--skip-download",
         "--compact", "-o", "json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr[-2000:]
    report = json.loads(done.stdout)
    return report if isinstance(report, dict) else _one(report)


def _by_copy(results: list[dict[str, Any]], copy: str) -> set[str]:
    return {r["check_id"] for r in results if r["file_path"].startswith(f"/{copy}/")}


def test_checkov_passes_every_listed_check(checkov_results: dict[str, Any]) -> None:
    listed = set(CHECKS.read_text().split())
    assert len(listed) == 41
    failed = [r for r in checkov_results["results"]["failed_checks"] if r["file_path"].startswith("/aws/")]
    assert not failed, [(r["check_id"], r["resource"]) for r in failed]
    # Every listed check applies to some resource of the module (none passes by having nothing to look at).
    assert _by_copy(checkov_results["results"]["passed_checks"], "aws") == listed
    assert checkov_results["summary"]["parsing_errors"] == 0


def test_checkov_catches_each_weakening(checkov_results: dict[str, Any]) -> None:
    expected = set().union(*(checks for *_, checks in WEAKENINGS))
    assert _by_copy(checkov_results["results"]["failed_checks"], "weak") == expected


def test_terraform_files_are_formatted() -> None:
    binary = shutil.which("tofu") or shutil.which("terraform")
    tofu = ROOT / ".tools" / "go-bin" / "tofu"
    binary = str(tofu) if tofu.exists() else binary
    if binary is None:
        pytest.skip("neither tofu nor terraform is installed: fmt not checked")
    done = subprocess.run(
        [binary, "fmt", "-check", "-diff", "-recursive", str(MODULE)], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
