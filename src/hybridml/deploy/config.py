"""Typed configuration of each deploy target, and how it is read from CLI flags, pipeline parameters or a file."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from hybridml.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from hybridml.config import Settings

TARGETS = ("local", "kserve", "sagemaker")
BUILT = ("local",)


@dataclass(frozen=True)
class TargetConfig:
    """Base of every target's configuration; ``kind`` names the target the factory builds from it."""

    kind: ClassVar[str] = "abstract"


@dataclass(frozen=True)
class LocalConfig(TargetConfig):
    """The local target: model server processes on this machine.

    Attributes:
        state_dir: directory of deployment state, logs and bundle copies (created if needed).
        host: address new servers listen on (their control listener stays on loopback).
        start_timeout_s: how long a new server may take to become ready.
        python: interpreter that runs the servers (needs hybridml installed).
        control_token_file: file holding the bearer token of the servers' control listeners (None: no token;
            loopback control calls need none).
        payload_log_max_bytes: size at which a server rotates its payload log (None: the server's default).
        payload_log_keep: how many rotated payload logs a server keeps (None: the server's default).
    """

    kind: ClassVar[str] = "local"

    state_dir: Path
    host: str = "127.0.0.1"
    start_timeout_s: float = 120.0
    python: str = sys.executable
    control_token_file: str | None = None
    payload_log_max_bytes: int | None = None
    payload_log_keep: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.state_dir, (str, Path)) or not str(self.state_dir):
            raise InvalidInputError(f"local deploy config: state_dir must be a directory path, got {self.state_dir!r}")
        object.__setattr__(self, "state_dir", Path(self.state_dir).expanduser())
        if not isinstance(self.host, str) or not self.host:
            raise InvalidInputError(f"local deploy config: host must be a non-empty string, got {self.host!r}")
        timeout = self.start_timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise InvalidInputError(f"local deploy config: start_timeout_s must be a positive number, got {timeout!r}")
        if not isinstance(self.python, str) or not self.python:
            raise InvalidInputError(f"local deploy config: python must be a non-empty string, got {self.python!r}")
        if self.control_token_file is not None and not isinstance(self.control_token_file, str):
            raise InvalidInputError(
                f"local deploy config: control_token_file must be a path, got {self.control_token_file!r}"
            )
        for key in ("payload_log_max_bytes", "payload_log_keep"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidInputError(f"local deploy config: {key} must be a positive integer, got {value!r}")


def config_from(name: str | None, options: Mapping[str, Any], settings: Settings) -> TargetConfig:
    """The typed configuration of target ``name`` from loosely typed ``options`` (flags, JSON or YAML).

    Args:
        name: ``local``, ``kserve`` or ``sagemaker``; None takes ``options["target"]``, else ``local``.
        options: the target's settings by field name; a ``target`` key must agree with ``name``.
        settings: the process settings, for defaults (the local target's state lives under the home).

    Raises:
        InvalidInputError: an unknown target, one not built yet, an unknown key (named) or a bad value.
    """
    options = dict(options)
    named_in_options = options.pop("target", None)
    if name and named_in_options is not None and named_in_options != name:
        raise InvalidInputError(f"deploy config is for target {named_in_options!r}, not {name!r}")
    name = name or named_in_options or "local"
    if name not in TARGETS:
        raise InvalidInputError(f"unknown deploy target {name!r} (choose from {', '.join(TARGETS)})")
    if name not in BUILT:
        raise InvalidInputError(f"deploy target {name!r} is not built yet (use {', '.join(map(repr, BUILT))})")
    fields = {f.name for f in dataclasses.fields(LocalConfig)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise InvalidInputError(f"unknown {name} deploy config key {unknown[0]!r} (known: {', '.join(sorted(fields))})")
    options.setdefault("state_dir", settings.deployments_dir)
    try:
        return LocalConfig(**options)
    except TypeError as exc:  # a value of a type that __post_init__ cannot even look at
        raise InvalidInputError(f"bad {name} deploy config: {exc}") from exc


def parse_config(text: str, source: str = "deploy config") -> dict[str, Any]:
    """A JSON or YAML object of target options (``""`` is no options); ``source`` names it in errors.

    Raises:
        InvalidInputError: not JSON/YAML, or not an object with string keys.
    """
    if not text.strip():
        return {}
    import yaml  # JSON is YAML, so one parser reads both (and says where a file is broken)

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{source} is neither JSON nor YAML: {str(exc).splitlines()[0]}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        raise InvalidInputError(f"{source} must be an object of option names to values, got {type(raw).__name__}")
    return raw


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The target options in a JSON or YAML file (``--deploy-config FILE``).

    Raises:
        NotFoundError: no such file.
        InvalidInputError: it is not a JSON/YAML object.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"deploy config file not found: {path}")
    return parse_config(path.read_text(), source=f"deploy config {path}")
