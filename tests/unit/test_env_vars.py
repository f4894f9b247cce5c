"""Every environment variable hybridml reads or sets is declared once, in hybridml.config.ENV_VARS."""

from __future__ import annotations

import re
from pathlib import Path

from hybridml.adapters.mlflow_client import HTTP_SETTINGS
from hybridml.config import ENV_VARS

SRC = Path(__file__).resolve().parents[2] / "src" / "hybridml"


def test_mlflow_http_settings_are_declared_with_their_values() -> None:
    for name, value in HTTP_SETTINGS.items():
        assert name in ENV_VARS, name
        assert ENV_VARS[name][1].split()[0] == value, (name, ENV_VARS[name][1], value)


def test_every_hybridml_variable_in_the_code_is_declared() -> None:
    used = set()
    for path in SRC.rglob("*.py"):
        used |= set(re.findall(r"[\"'](HYBRIDML_[A-Z_]+)[\"']", path.read_text()))
    # Variables only tests set to simulate a condition are prefixed HYBRIDML_TEST_ and need no declaration.
    undeclared = sorted(name for name in used if name not in ENV_VARS and not name.startswith("HYBRIDML_TEST_"))
    assert not undeclared, f"declare these in hybridml.config.ENV_VARS: {undeclared}"
