"""The local target's files: one state JSON per deployment (written atomically), logs and bundle copies."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hybridml.core.naming import check_model_name
from hybridml.errors import InvalidInputError, NotFoundError

# Names allowed before the naming rule existed: deployments made then can still be read, changed and deleted.
_LEGACY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
ROLES = ("stable", "canary", "shadow")


def check_version(version: str | int) -> str:
    """``version`` as a label that is safe as a directory name (an int becomes its string)."""
    text = str(version) if isinstance(version, int) and not isinstance(version, bool) else version
    if not isinstance(text, str) or not _VERSION.fullmatch(text):
        raise InvalidInputError(f"invalid version {version!r}: use letters, digits, '.', '_' and '-'")
    return text


def serving_config(state: dict[str, Any]) -> dict[str, Any]:
    """The serving configuration (variants and host) recorded in a deployment's state."""
    return {key: state.get(key) for key in (*ROLES, "host")}


class StateStore:
    """Files of the deployments in ``root``.

    Per deployment ``NAME``: ``NAME.json`` (pid, host, port, endpoint, control address, stable/canary/shadow
    config), ``NAME.log`` (server output), ``NAME.payload.jsonl`` (every scored request, shadow copies
    included), ``NAME.feedback.jsonl`` (ground-truth labels) and ``NAME/<version>/`` (a copy of each deployed
    bundle, so cleaning up MLflow artifacts cannot pull a model away from under a running server). The logs
    are kept after :meth:`remove`.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def checked_name(self, name: str, *, new: bool = False) -> str:
        """``name`` if it follows the naming rule (or, unless ``new``, names a deployment made before it)."""
        try:
            return check_model_name(name)
        except InvalidInputError:
            if not new and isinstance(name, str) and _LEGACY_NAME.fullmatch(name) and self.state_file(name).is_file():
                return name
            raise

    def state_file(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def log_file(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def payload_log(self, name: str) -> Path:
        return self.root / f"{name}.payload.jsonl"

    def feedback_log(self, name: str) -> Path:
        return self.root / f"{name}.feedback.jsonl"

    def exists(self, name: str) -> bool:
        return self.state_file(name).is_file()

    def names(self) -> list[str]:
        """Names of the recorded deployments, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(path.stem for path in self.root.glob("*.json"))

    def read(self, name: str) -> dict[str, Any]:
        """The recorded state of ``name``.

        Raises:
            InvalidInputError: a bad name, or a corrupt state file.
            NotFoundError: no deployment of that name.
        """
        path = self.state_file(self.checked_name(name))
        if not path.is_file():
            raise NotFoundError(f"no local deployment named {name!r} (in {self.root})")
        try:
            state: dict[str, Any] = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"deployment state {path} is corrupt: {exc}") from exc
        return state

    def write(self, state: dict[str, Any]) -> None:
        """Record ``state`` (keyed by its ``name``): write then rename, so a reader never sees half a file."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.state_file(state["name"])
        with tempfile.NamedTemporaryFile("w", dir=self.root, suffix=".tmp", delete=False) as tmp:
            json.dump(state, tmp, indent=2, sort_keys=True)
        os.replace(tmp.name, path)

    def remove(self, name: str) -> None:
        """Forget ``name``: its state file and bundle copies (the logs stay)."""
        self.state_file(name).unlink()
        shutil.rmtree(self.root / name, ignore_errors=True)

    def scratch(self, name: str) -> tempfile.TemporaryDirectory[str]:
        """A scratch directory beside ``name``'s bundle copies (same file system, so installing is a rename)."""
        parent = self.root / name
        parent.mkdir(parents=True, exist_ok=True)
        return tempfile.TemporaryDirectory(dir=parent, prefix=".fetch-")

    def install_bundle(self, name: str, version: str, source: Path, *, move: bool) -> Path:
        """Put the bundle in ``source`` at ``NAME/<version>/`` (moved if ``move``, else copied); returns it."""
        destination = self.root / name / version
        destination.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{version}-"))
        if move:
            staging.rmdir()
            shutil.move(str(source), staging)
        else:
            shutil.copytree(source, staging, dirs_exist_ok=True)
        # A running server has its model in memory, so replacing the files of a re-deployed version is safe.
        if destination.exists():
            shutil.rmtree(destination)
        staging.rename(destination)
        return destination.resolve()
