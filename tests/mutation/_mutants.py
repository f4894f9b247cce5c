"""A pytest plugin that disables one safety check for the whole run: a mutant, to prove a test catches it.

Load it with ``-p tests.mutation._mutants`` and name the mutant in ``HYBRIDML_TEST_MUTANT``. Each mutant swaps the
code object of the real function, so every caller sees it, including modules that imported the function by name
before the swap; nothing on disk changes. Without the variable the plugin does nothing. An unknown name is a usage
error (exit 4), never a silently unmutated run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

MUTANT_ENV = "HYBRIDML_TEST_MUTANT"
APPLIED = "hybridml mutant applied:"


# ---------------------------------------------------------------- mutants: each the original with one check removed


def _skops_trust_everything(content: bytes, model_type: str, path: Path) -> list[str]:
    import skops.io as sio

    found: list[str] = sio.get_untrusted_types(data=content)
    return found  # no comparison with the allow-list


async def _body_limit_per_chunk(scope: Any, receive: Any, headers: dict[str, str], limit: int) -> Any:
    from hybridml.serving.app import error_response

    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            return error_response(400, "content-length must be a non-negative integer")
        if int(declared) > limit:
            return error_response(413, f"request body of {declared} bytes is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        if len(chunk) > limit:  # each chunk against the limit, not the running total
            return error_response(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _body_limit_off(scope: Any, receive: Any, headers: dict[str, str], limit: int) -> Any:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _traversal_dotdot_allowed(path: str) -> PurePosixPath:
    from hybridml.errors import InvalidInputError
    from hybridml.serving.storage import _decoded

    text = _decoded(path)
    if "\x00" in text or "\\" in text:
        raise InvalidInputError(f"path {path[:100]!r} contains a NUL or backslash")
    pure = PurePosixPath(text)
    if pure.is_absolute() or (len(text) > 1 and text[1] == ":"):
        raise InvalidInputError(f"path {path[:100]!r} is absolute; only paths inside the model root are allowed")
    return pure  # no '..' check


def _traversal_absolute_allowed(path: str) -> PurePosixPath:
    from hybridml.errors import InvalidInputError
    from hybridml.serving.storage import _decoded

    text = _decoded(path)
    if "\x00" in text or "\\" in text:
        raise InvalidInputError(f"path {path[:100]!r} contains a NUL or backslash")
    pure = PurePosixPath(text)
    if ".." in pure.parts:  # no absolute-path or drive-letter check
        raise InvalidInputError(f"path {path[:100]!r} escapes the model root")
    return pure


def _traversal_not_decoded(text: str) -> str:
    return text  # percent-encoding left as is, so '%2e%2e' is not seen as '..'


def _traversal_symlink_followed(root: Path, relative: str) -> Path:
    from hybridml.serving.storage import safe_relative

    return (root.resolve() / safe_relative(relative)).resolve()  # no check that the resolved target stays inside


def _pickle_allowed(directory: Path, *, allow_pickle: bool = False) -> None:
    return None  # every pickle file accepted


def _pickle_header_ignored(directory: Path, *, allow_pickle: bool = False) -> None:
    from hybridml.errors import InvalidInputError
    from hybridml.serving.storage import PICKLE_SUFFIXES

    if allow_pickle:
        return
    for path in directory.rglob("*"):
        if path.is_file() and path.suffix.lower() in PICKLE_SUFFIXES:  # the pickle header is not read
            raise InvalidInputError(f"refusing pickle-based model file {path.name} (pass --allow-pickle to accept)")


def _name_rule_off(name: object) -> str:
    return name  # type: ignore[return-value]  # every name accepted


def _control_auth_off(self: Any, client: Any, authorization: str | None, *, local_socket: bool = False) -> int | None:
    return None  # every client allowed


def _control_any_token(self: Any, client: Any, authorization: str | None, *, local_socket: bool = False) -> int | None:
    from hybridml.serving.auth import is_loopback_client

    if local_socket or is_loopback_client(client):
        return None
    if authorization is None or authorization[:7].lower() != "bearer ":
        return 401
    return None  # any bearer token accepted, configured or not


def _targets() -> dict[str, tuple[Callable[..., Any], Callable[..., Any]]]:
    """Mutant name -> (the real function, the mutant whose code replaces it)."""
    from hybridml.core import model, naming
    from hybridml.serving import app, auth, storage

    return {
        "skops_trust_everything": (model._vetted_skops_types, _skops_trust_everything),
        "body_limit_per_chunk": (app.read_body, _body_limit_per_chunk),
        "body_limit_off": (app.read_body, _body_limit_off),
        "traversal_dotdot_allowed": (storage.safe_relative, _traversal_dotdot_allowed),
        "traversal_absolute_allowed": (storage.safe_relative, _traversal_absolute_allowed),
        "traversal_not_decoded": (storage._decoded, _traversal_not_decoded),
        "traversal_symlink_followed": (storage.inside, _traversal_symlink_followed),
        "pickle_allowed": (storage.check_no_pickle, _pickle_allowed),
        "pickle_header_ignored": (storage.check_no_pickle, _pickle_header_ignored),
        "name_rule_off": (naming.check_model_name, _name_rule_off),
        "control_auth_off": (auth.ControlAuth.decide, _control_auth_off),
        "control_any_token": (auth.ControlAuth.decide, _control_any_token),
    }


MUTANTS = (
    "skops_trust_everything",
    "body_limit_per_chunk",
    "body_limit_off",
    "traversal_dotdot_allowed",
    "traversal_absolute_allowed",
    "traversal_not_decoded",
    "traversal_symlink_followed",
    "pickle_allowed",
    "pickle_header_ignored",
    "name_rule_off",
    "control_auth_off",
    "control_any_token",
)


def pytest_configure(config: pytest.Config) -> None:
    name = os.environ.get(MUTANT_ENV)
    if not name:
        return
    targets = _targets()
    if name not in targets:
        raise pytest.UsageError(f"{MUTANT_ENV}={name!r} is not a mutant; known: {', '.join(sorted(targets))}")
    original, mutant = targets[name]
    if original.__code__.co_freevars or mutant.__code__.co_freevars:
        raise pytest.UsageError(f"mutant {name!r}: closures cannot swap code objects")
    original.__code__ = mutant.__code__
    config.stash[_applied] = name


_applied = pytest.StashKey[str]()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    name = config.stash.get(_applied, None)
    if name is not None:
        terminalreporter.write_line(f"{APPLIED} {name}")
