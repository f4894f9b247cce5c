"""Architecture contract: the core imports no framework, so every edge can call it."""

from __future__ import annotations

import ast
from pathlib import Path

import hybridml

FORBIDDEN = {"kfp", "kserve", "mlflow", "kubernetes", "boto3", "botocore", "prometheus_client", "fastapi", "typer"}
CORE = Path(hybridml.__file__).parent / "core"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_imports_no_framework() -> None:
    files = sorted(CORE.glob("*.py"))
    assert len(files) >= 6
    offenders = {f.name: sorted(_imports(f) & FORBIDDEN) for f in files if _imports(f) & FORBIDDEN}
    assert offenders == {}


def test_importing_the_cli_does_not_load_heavy_frameworks() -> None:
    import subprocess
    import sys

    code = (
        "import sys, hybridml.cli; print(','.join(m for m in ('kfp','kserve','mlflow','xgboost') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""
