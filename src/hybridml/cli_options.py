"""Options shared by the `hybridml` sub-command modules: the deploy target's configuration and its cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DeployConfigOption = Annotated[
    Path | None, typer.Option("--deploy-config", help="The target's options as a JSON or YAML file.")
]
NamespaceOption = Annotated[
    str | None, typer.Option("--namespace", help="kserve: namespace of the InferenceServices (default: default).")
]
KubeconfigOption = Annotated[
    str | None, typer.Option("--kubeconfig", help="kserve: kubeconfig file (default: in-cluster, else KUBECONFIG).")
]
ContextOption = Annotated[str | None, typer.Option("--context", help="kserve: kubeconfig context.")]
