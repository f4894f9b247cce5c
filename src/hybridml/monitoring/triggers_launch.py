"""How a trigger starts a retraining run: a local `hybridml run` process, or a Kubeflow run on a cluster.

Both run the one training pipeline: it registers the new version as the challenger, the approval policy
compares it with the champion, and an approved version is deployed with the run's ``traffic`` share (below
100: as a canary beside the stable version on the model's endpoint).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hybridml.adapters.kfp_client import COMPILED_PIPELINE, check_arguments, make_client
from hybridml.errors import InvalidInputError
from hybridml.monitoring.triggers import RunOutcome, RunRequest

# The shell writes the exit code last, by rename, so a reader finds either no code or the whole of it, even after
# the trigger itself restarted (the run is not its child any more then).
_WRAPPER = (
    'out=$1; shift; "$@" >"$out/summary.json" 2>"$out/stderr.log"; '
    'echo $? >"$out/exit_code.tmp" && mv "$out/exit_code.tmp" "$out/exit_code"'
)


def _hybridml_executable() -> str:
    beside = Path(sys.executable).with_name("hybridml")
    return str(beside) if beside.is_file() else "hybridml"


class LocalRunLauncher:
    """Starts ``hybridml --home HOME run --json --data URI --model-name NAME --traffic PCT [run_args]``.

    The run is its own process session (it outlives a stopped trigger, which finds its outcome on restart) and
    goes through the ``hybridml`` launcher, so this home's warm background process runs it when there is one.
    Its output, error log and exit code are kept in ``runs_root/<run id>/``.

    Args:
        home: the hybridml home the run uses.
        runs_root: where each run's files go (``HYBRIDML_HOME/triggers/runs``).
        run_args: more ``hybridml run`` options (``--target label``, ``--params {...}``, ``--n-trials 5``...).
        has_endpoint: whether the model already has an endpoint; without one a canary cannot be made, so the
            first version is deployed as stable (100%) and the run record says so.
        executable: the ``hybridml`` command (default: the one beside this interpreter).
        env: the run's environment (default: this process's).
    """

    def __init__(
        self,
        home: Path,
        runs_root: Path,
        *,
        run_args: Sequence[str] = (),
        has_endpoint: Callable[[str], bool] = lambda _name: True,
        executable: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.home = home
        self.runs_root = runs_root
        self.run_args = list(run_args)
        self.has_endpoint = has_endpoint
        self.executable = executable or _hybridml_executable()
        self.env = dict(env) if env is not None else None
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    def command(self, request: RunRequest, traffic_percent: int) -> list[str]:
        """The ``hybridml run`` command line for ``request``."""
        return [
            self.executable,
            "--home",
            str(self.home),
            "run",
            "--json",
            "--data",
            request.data_uri,
            "--model-name",
            request.model,
            "--traffic",
            str(traffic_percent),
            *self.run_args,
        ]

    def start(self, request: RunRequest) -> dict[str, Any]:
        """Start the run in the background; returns its process id, folder, command line and any note."""
        traffic, note = request.traffic_percent, ""
        if traffic < 100 and not self.has_endpoint(request.model):
            traffic, note = 100, f"{request.model} has no endpoint yet: an approved version is deployed as stable"
        folder = self.runs_root / request.run_id
        folder.mkdir(parents=True, exist_ok=True)
        command = self.command(request, traffic)
        child = subprocess.Popen(
            ["/bin/sh", "-c", _WRAPPER, "sh", str(folder), *command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=self.env,
        )
        self._children[request.run_id] = child
        return {"pid": child.pid, "dir": str(folder), "command": command, "traffic_percent": traffic, "note": note}

    def poll(self, run: dict[str, Any]) -> RunOutcome | None:
        """The run's outcome from its exit code and JSON summary; None while it runs."""
        launch = run.get("launch") or {}
        folder = Path(launch.get("dir", ""))
        child = self._children.get(run["run_id"])
        ended = child.poll() is not None if child is not None else not _alive(int(launch.get("pid", 0)))
        code_file = folder / "exit_code"
        if not code_file.is_file():
            if ended:
                self._children.pop(run["run_id"], None)
                return RunOutcome("failed", "the run's process ended without an exit code (killed?)")
            return None
        self._children.pop(run["run_id"], None)
        code = int(code_file.read_text().strip() or 1)
        if code != 0:
            errors = [line for line in _read(folder / "stderr.log").splitlines() if line.strip()]
            last = errors[-1].strip() if errors else "no error output"
            return RunOutcome("failed", f"hybridml run exited {code}: {last}")
        try:
            summary = json.loads(_read(folder / "summary.json"))
        except ValueError:
            return RunOutcome("failed", f"hybridml run exited 0 without a JSON summary ({folder / 'summary.json'})")
        return _outcome(summary, launch)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _outcome(summary: dict[str, Any], launch: dict[str, Any]) -> RunOutcome:
    version = summary.get("model_version")
    status = summary.get("approval_status")
    detail = f"registered {summary.get('model_name')} version {version} ({status}, ROC AUC {summary.get('roc_auc')})"
    if summary.get("endpoint"):
        traffic = launch.get("traffic_percent", 100)
        role = "stable" if traffic == 100 else f"canary at {traffic}%"
        detail += f"; deployed as {role} on {summary['endpoint']}"
    else:
        detail += "; not deployed"
    return RunOutcome("succeeded", detail, int(version) if isinstance(version, int) else None)


# Kubeflow run states (kfp_server_api V2beta1RuntimeState) that are final.
_KFP_SUCCEEDED = {"SUCCEEDED"}
_KFP_FAILED = {"FAILED", "CANCELED", "CANCELING", "SKIPPED"}


class KfpLauncher:
    """Starts the committed pipeline on Kubeflow Pipelines with ``kfp.Client(host)``.

    Args:
        host: the KFP API endpoint.
        arguments: pipeline parameters every run gets (``deploy_target``, ``deploy_config``, ``tracking_uri``,
            ``target``...); the run's data, model name and traffic share are set per run.
        package: the compiled pipeline (default: the committed ``hybridml_training.yaml``).
        experiment: KFP experiment the runs are filed under.
        namespace: Kubernetes namespace of a multi-user installation.
        client: a ready client object (tests inject one; default: ``kfp.Client(host=host)``, made once).
        token: bearer token for the KFP API (``kfp.Client(existing_token=...)``).
    """

    def __init__(
        self,
        host: str,
        *,
        arguments: Mapping[str, Any] | None = None,
        package: Path = COMPILED_PIPELINE,
        experiment: str = "hybridml-triggers",
        namespace: str | None = None,
        client: Any = None,
        token: str | None = None,
    ) -> None:
        if not host:
            raise InvalidInputError("a Kubeflow launcher needs the KFP host (--kfp-host)")
        self.host = host
        self.arguments = dict(arguments or {})
        self.package = package
        self.experiment = experiment
        self.namespace = namespace
        self._client = client
        self._token = token

    def client(self) -> Any:
        """The KFP client (made at first use)."""
        if self._client is None:
            self._client = make_client(self.host, token=self._token)
        return self._client

    def start(self, request: RunRequest) -> dict[str, Any]:
        """Create the Kubeflow run; returns its id and the arguments it got."""
        if not self.package.is_file():
            raise InvalidInputError(f"compiled pipeline not found: {self.package} (hybridml compile -o FILE)")
        # Checked against the compiled pipeline: a misspelt --kfp-arg fails here, not in a Kubeflow pod.
        arguments = check_arguments(
            {
                **self.arguments,
                "data_uri": request.data_uri,
                "model_name": request.model,
                "traffic_percent": request.traffic_percent,
            },
            self.package,
        )
        result = self.client().create_run_from_pipeline_package(
            str(self.package),
            arguments=arguments,
            run_name=f"hybridml-trigger-{request.run_id}",
            experiment_name=self.experiment,
            namespace=self.namespace,
        )
        return {"kfp_run_id": str(result.run_id), "host": self.host, "arguments": arguments}

    def poll(self, run: dict[str, Any]) -> RunOutcome | None:
        """The Kubeflow run's final state, or None while it is not final."""
        kfp_run_id = (run.get("launch") or {}).get("kfp_run_id")
        if not kfp_run_id:
            return RunOutcome("failed", "no Kubeflow run id was recorded")
        state = str(self.client().get_run(kfp_run_id).state or "").upper()
        if state in _KFP_SUCCEEDED:
            return RunOutcome("succeeded", f"Kubeflow run {kfp_run_id} succeeded")
        if state in _KFP_FAILED:
            return RunOutcome("failed", f"Kubeflow run {kfp_run_id} ended {state}")
        return None
