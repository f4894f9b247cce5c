"""A test of the test suite: with any one safety check disabled, the tests that guard it must fail.

Each mutant (see :mod:`tests.mutation._mutants`) removes one refusal the safety rules promise: untrusted skops
types, oversized chunked bodies, path traversal, pickle files, invalid names, unauthenticated control calls. The
guarding tests run in a fresh pytest process with the mutant applied and must fail (exit 1); the same tests
without a mutant must pass (exit 0), so a broken environment is never mistaken for a killed mutant.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mutation._mutants import APPLIED, MUTANT_ENV, MUTANTS

ROOT = Path(__file__).resolve().parents[2]

# The few tests that guard each check: a group's tests are run once clean and once per mutant of the group.
GROUPS: dict[str, list[str]] = {
    "skops": ["tests/unit/test_model_safety.py", "-k", "refuses_every_payload or refused_for_another"],
    "body": ["tests/unit/serving/test_body_limit.py"],
    "storage": [
        "tests/unit/serving/test_serving_parts.py",
        "-k",
        "escaping_paths_are_refused or symlink_escape or resolve_model_schemes or s3_fetch",
    ],
    "naming": ["tests/unit/test_naming.py"],
    "control": ["tests/unit/serving/test_control.py"],
}

# Mutant -> the group whose tests must catch it.
KILLERS: dict[str, str] = {
    "skops_trust_everything": "skops",
    "body_limit_per_chunk": "body",
    "body_limit_off": "body",
    "traversal_dotdot_allowed": "storage",
    "traversal_absolute_allowed": "storage",
    "traversal_not_decoded": "storage",
    "traversal_symlink_followed": "storage",
    "pickle_allowed": "storage",
    "pickle_header_ignored": "storage",
    "name_rule_off": "naming",
    "control_auth_off": "control",
    "control_any_token": "control",
}


def _pytest(group: str, mutant: str | None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != MUTANT_ENV and not key.startswith("PYTEST_")}
    if mutant is not None:
        env[MUTANT_ENV] = mutant
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "tests.mutation._mutants"]
    return subprocess.run([*command, *GROUPS[group]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


def test_every_mutant_has_a_group() -> None:
    assert set(KILLERS) == set(MUTANTS)
    assert set(KILLERS.values()) == set(GROUPS)


@pytest.mark.parametrize("group", list(GROUPS))
def test_the_guarding_tests_pass_without_a_mutant(group: str) -> None:
    result = _pytest(group, None)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert APPLIED not in result.stdout
    assert re.search(r"\b\d+ passed\b", result.stdout)


@pytest.mark.parametrize("mutant", MUTANTS)
def test_a_disabled_safety_check_fails_its_tests(mutant: str) -> None:
    group = KILLERS[mutant]
    result = _pytest(group, mutant)
    output = result.stdout[-3000:] + result.stderr[-2000:]
    assert f"{APPLIED} {mutant}" in result.stdout, output  # the mutant was really in place
    assert result.returncode == 1, f"mutant {mutant} survived the {group} tests (exit {result.returncode}):\n{output}"
    failed = re.findall(r"^FAILED (\S+)", result.stdout, flags=re.MULTILINE)
    assert failed and all(name.startswith(GROUPS[group][0]) for name in failed), output
