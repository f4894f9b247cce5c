"""The PrometheusRule of hybridml model servers, and its ``spec`` as a plain Prometheus rule file (for promtool)."""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from hybridml.errors import InvalidInputError

RULES_PATH = Path(__file__).with_name("rules.yaml")
RULES_TEST_PATH = Path(__file__).with_name("rules_test.yaml")
ALERTS = (
    "HybridmlHighErrorRate",
    "HybridmlHighLatencyP99",
    "HybridmlDriftDetected",
    "HybridmlNoTraffic",
    "HybridmlModelDown",
    "HybridmlCanaryWorseThanStable",
)
# The duration pattern of the PrometheusRule CRD's `for` field (monitoring.coreos.com/v1).
_DURATION = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")


def load_resource(path: Path = RULES_PATH) -> dict[str, Any]:
    """The PrometheusRule custom resource in ``path`` (default: the shipped one).

    Raises:
        InvalidInputError: the file is not a ``monitoring.coreos.com/v1`` PrometheusRule with rule groups.
    """
    try:
        resource = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(resource, dict) or resource.get("kind") != "PrometheusRule":
        raise InvalidInputError(f"{path} is not a PrometheusRule")
    if resource.get("apiVersion") != "monitoring.coreos.com/v1":
        raise InvalidInputError(
            f"{path}: apiVersion must be monitoring.coreos.com/v1, got {resource.get('apiVersion')}"
        )
    groups = (resource.get("spec") or {}).get("groups")
    if not isinstance(groups, list) or not groups:
        raise InvalidInputError(f"{path} has no spec.groups")
    return resource


def rule_file(
    resource: dict[str, Any], *, for_override: str | None = None, interval: str | None = None
) -> dict[str, Any]:
    """A plain Prometheus rule file (``groups: [...]``) made of the resource's ``spec``.

    Args:
        resource: a PrometheusRule, as :func:`load_resource` returns it.
        for_override: replaces every alert's ``for`` duration (integration tests use seconds; never shipped).
        interval: sets every group's evaluation interval (None: Prometheus's global one).

    Raises:
        InvalidInputError: ``for_override`` or ``interval`` is not a Prometheus duration.
    """
    for name, value in (("for_override", for_override), ("interval", interval)):
        if value is not None and not _DURATION.match(value):
            raise InvalidInputError(f"{name} must be a Prometheus duration such as 30s or 5m, got {value!r}")
    groups = copy.deepcopy(resource["spec"]["groups"])
    for group in groups:
        if interval is not None:
            group["interval"] = interval
        for rule in group["rules"]:
            if for_override is not None and "alert" in rule:
                rule["for"] = for_override
    return {"groups": groups}


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (PromQL expressions) as literal blocks, as they are written in rules.yaml."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def dump_rule_file(rules: dict[str, Any]) -> str:
    """YAML text of a rule file (block style, keys in their written order, expressions as literal blocks)."""
    return yaml.dump(rules, Dumper=_Dumper, sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> int:
    """``python -m hybridml.monitoring.prometheus [--for 1s] [--interval 1s] [--out FILE]``: print the rule file."""
    parser = argparse.ArgumentParser(
        prog="python -m hybridml.monitoring.prometheus",
        description="Print the spec of hybridml's PrometheusRule as a plain Prometheus rule file (for promtool).",
    )
    parser.add_argument("--rules", default=str(RULES_PATH), help="PrometheusRule YAML (default: the shipped one)")
    parser.add_argument("--for", dest="for_override", default=None, help="replace every alert's `for` (tests)")
    parser.add_argument("--interval", default=None, help="evaluation interval of every group")
    parser.add_argument("--out", default=None, help="write here instead of standard output")
    args = parser.parse_args(argv)
    try:
        text = dump_rule_file(
            rule_file(load_resource(Path(args.rules)), for_override=args.for_override, interval=args.interval)
        )
    except InvalidInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.out is None:
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)
    return 0
