"""Render every cluster manifest of the project into one folder (``make render``: ``build/rendered/``).

What is written, one multi-document YAML file each:

- ``kustomize/<overlay>.yaml``: ``kubectl kustomize manifests/overlays/<overlay>`` for kind, onprem and aws;
- ``helm/<values>.yaml``: ``helm template`` of ``helm/hybridml`` with its defaults (``default.yaml``) and with
  each example values file ``helm/hybridml/values-*.yaml``;
- ``kserve/<case>.yaml``: the objects the kserve deploy target applies (``hybridml.deploy.kserve.render``) for a
  sample model, stable alone and with a canary at 10 %, in Standard and Serverless mode, and its ServingRuntime.

``--sync`` first copies the PrometheusRule and the Grafana dashboard ConfigMap from ``src/hybridml/monitoring``
into ``manifests/base/monitoring/`` and ``helm/hybridml/files/`` (kustomize and Helm both refuse to read files
outside their own folder, symlinks included, so each keeps a byte-identical copy); ``--check-sync`` exits 1
naming every copy that differs from its source (a unit test runs it).

Tools: ``kubectl`` from PATH (``KUBECTL`` overrides), ``helm`` from ``.tools/go-bin/helm`` (``HELM`` overrides).
Exit status 2 with one line when a tool is missing or fails, or a copy is stale.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OVERLAYS = ("kind", "onprem", "aws")
CHART = ROOT / "helm" / "hybridml"
# (source, copies): the one hand-written or generated file, and where kustomize and Helm read it.
COPIES = (
    (
        ROOT / "src/hybridml/monitoring/prometheus/rules.yaml",
        (ROOT / "manifests/base/monitoring/rules.yaml", CHART / "files/prometheus-rules.yaml"),
    ),
    (
        ROOT / "src/hybridml/monitoring/dashboards/configmap.yaml",
        (ROOT / "manifests/base/monitoring/dashboard-configmap.yaml", CHART / "files/dashboard-configmap.yaml"),
    ),
)
SAMPLE_NAMESPACE = "hybridml"


def stale_copies() -> list[str]:
    """Copies that differ from their source (or are missing), as ``copy (source)`` paths relative to the root."""
    stale = []
    for source, copies in COPIES:
        text = source.read_bytes()
        for copy in copies:
            if not copy.is_file() or copy.read_bytes() != text:
                stale.append(f"{copy.relative_to(ROOT)} ({source.relative_to(ROOT)})")
    return stale


def sync() -> None:
    """Write every copy from its source."""
    for source, copies in COPIES:
        for copy in copies:
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, copy)


def tool(env: str, default: str) -> str:
    """The path of a tool, or exit 2 naming how to get it."""
    path = os.environ.get(env) or (shutil.which(default) if "/" not in default else default)
    if not path or not os.access(path, os.X_OK):
        where = os.environ.get(env) or default
        print(f"render: {where} not found (set {env}; `make render` builds helm into .tools/go-bin)", file=sys.stderr)
        sys.exit(2)
    return path


def run(args: list[str]) -> str:
    """Run one tool and return its stdout; exit 2 with its stderr on failure."""
    done = subprocess.run(args, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        print(f"render: {' '.join(args[:3])} ... failed with exit code {done.returncode}", file=sys.stderr)
        sys.exit(2)
    return done.stdout


def kserve_objects() -> dict[str, list[dict[str, Any]]]:
    """The kserve target's objects for a sample model: stable, stable + canary, per mode; and its runtime."""
    from hybridml.deploy.config import KServeConfig
    from hybridml.deploy.kserve import render

    config = KServeConfig(
        namespace=SAMPLE_NAMESPACE,
        service_account="hybridml-predictor",
        image="ghcr.io/hybridml/predictor:0.1.0",
        mode="Standard",
    )
    stable = render.Served("1", "s3://hybridml-models/churn/1")
    canary = render.Served("2", "s3://hybridml-models/churn/2")
    features = ("tenure", "monthly_charges", "contract")
    cases: dict[str, list[dict[str, Any]]] = {"servingruntime": [render.serving_runtime(config)]}
    for mode in (render.STANDARD, render.SERVERLESS):
        # Serverless allows scale to zero; Standard refuses min_replicas 0, so both keep the default 1.
        slug = mode.lower()
        cases[f"{slug}-stable"] = [render.inference_service(config, "churn", mode, stable, features=features)]
        cases[f"{slug}-canary"] = [
            render.inference_service(config, "churn", mode, stable, canary, canary_percent=10, features=features)
        ]
    return cases


def render_all(out: Path) -> list[Path]:
    """Render everything under ``out`` (emptied first); return the files written."""
    import yaml

    kubectl = tool("KUBECTL", "kubectl")
    helm = tool("HELM", str(ROOT / ".tools/go-bin/helm"))
    if out.exists():
        shutil.rmtree(out)
    written: list[Path] = []

    def write(relative: str, text: str) -> None:
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)

    for overlay in OVERLAYS:
        write(f"kustomize/{overlay}.yaml", run([kubectl, "kustomize", f"manifests/overlays/{overlay}"]))
    values = [None, *sorted(CHART.glob("values-*.yaml"))]
    for file in values:
        args = [helm, "template", "hybridml", str(CHART), "--namespace", SAMPLE_NAMESPACE]
        if file is not None:
            args += ["-f", str(file)]
        name = "default" if file is None else file.stem.removeprefix("values-")
        write(f"helm/{name}.yaml", run(args))
    try:
        cases = kserve_objects()
    except ImportError as exc:  # the kserve target is optional in a partial checkout
        print(f"render: kserve target not rendered ({exc})", file=sys.stderr)
        cases = {}
    for case, objects in cases.items():
        write(f"kserve/{case}.yaml", yaml.safe_dump_all(objects, sort_keys=False))
    return written


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "rendered", help="output folder")
    parser.add_argument("--sync", action="store_true", help="copy the monitoring files into manifests/ and helm/")
    parser.add_argument("--check-sync", action="store_true", help="exit 1 when a copy differs; render nothing")
    args = parser.parse_args(argv)
    if args.sync:
        sync()
    stale = stale_copies()
    if args.check_sync:
        for line in stale:
            print(f"stale copy: {line} (python scripts/render.py --sync)", file=sys.stderr)
        return 1 if stale else 0
    if stale:
        print(f"render: stale copies, run with --sync first: {', '.join(stale)}", file=sys.stderr)
        return 2
    for path in render_all(args.out):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
