"""Which daemon a command belongs to (its home, socket and build fingerprint); stdlib only, cheap to compute."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import hybridml
from hybridml.config import Settings

ENABLE_ENV = "HYBRIDML_DAEMON"
IDLE_ENV = "HYBRIDML_DAEMON_IDLE_S"
DEFAULT_IDLE_S = 900.0
# Tests only: stands in for the computed fingerprint, to start a daemon that looks like another build.
FINGERPRINT_ENV = "HYBRIDML_TEST_DAEMON_FINGERPRINT"
# Read by libraries when the daemon imports them, not when a command runs: a client whose values differ
# must get a daemon started with its own (it is part of the fingerprint).
IMPORT_TIME_ENV = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONWARNINGS",
    "PYTHONIOENCODING",
    "PYTHONUTF8",
    "PYTHONHASHSEED",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "MPLBACKEND",
    "MPLCONFIGDIR",
)
_SOCKET_LIMIT = 100  # sockaddr_un holds 108 bytes with the terminating NUL; keep a margin


@dataclass(frozen=True)
class Location:
    """Where the daemon of one home listens, logs and locks."""

    home: str
    socket: str
    lock: str  # held by the running daemon for its whole life: at most one per home
    start_lock: str  # held by a client while it starts one, so two first commands start one daemon
    log: str


def idle_timeout(env: Mapping[str, str]) -> float:
    """Seconds a daemon waits with no command running before it stops (``HYBRIDML_DAEMON_IDLE_S``, > 0)."""
    try:
        seconds = float(env.get(IDLE_ENV) or DEFAULT_IDLE_S)
    except ValueError:
        return DEFAULT_IDLE_S
    return seconds if seconds > 0 else DEFAULT_IDLE_S


def root_options(argv: Sequence[str]) -> tuple[str | None, str | None]:
    """The ``--home`` value and the command name in a `hybridml` command line (root options come first)."""
    home = None
    tokens = list(argv)
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token == "--home":  # noqa: S105 - an option name, not a secret
            home = tokens[index + 1] if index + 1 < len(tokens) else None
            index += 2
            continue
        if token.startswith("--home="):
            home = token.partition("=")[2]
        elif not token.startswith("-"):
            return home, token
        index += 1
    return home, None


def resolve_home(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """The home the command will use, resolved by the CLI's own rule (flag, then env, then ./.hybridml)."""
    home, _ = root_options(argv)
    return str(Settings.from_env(env, home=home or None).home)


def runtime_dir(env: Mapping[str, str] | None = None) -> Path:
    """A private folder for sockets: ``$XDG_RUNTIME_DIR/hybridml`` or ``/tmp/hybridml-UID``, mode 0700.

    Raises:
        PermissionError: the folder exists but is not a directory owned by this user and closed to others
            (someone else could otherwise stand in for the daemon).
    """
    env = os.environ if env is None else env
    runtime = env.get("XDG_RUNTIME_DIR", "")
    base = Path(runtime) / "hybridml" if runtime and os.path.isdir(runtime) else None
    if base is None or len(str(base)) > _SOCKET_LIMIT - 24:
        # A private folder in the shared temp dir; its owner and mode are checked below before any use.
        base = Path(env.get("TMPDIR") or "/tmp") / f"hybridml-{os.getuid()}"  # noqa: S108  # nosec B108
        if len(str(base)) > _SOCKET_LIMIT - 24:
            base = Path("/tmp") / f"hybridml-{os.getuid()}"  # noqa: S108  # nosec B108
    with contextlib.suppress(FileExistsError):
        base.mkdir(mode=0o700)
    info = base.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{base} must be a directory owned by uid {os.getuid()} with mode 0700")
    return base


def locate(home: str, env: Mapping[str, str] | None = None) -> Location:
    """The socket, locks and log of ``home``'s daemon (keyed by uid and a hash of the resolved home)."""
    base = runtime_dir(env)
    key = hashlib.sha256(home.encode()).hexdigest()[:16]
    return Location(
        home=home,
        socket=str(base / f"{key}.sock"),
        lock=str(base / f"{key}.lock"),
        start_lock=str(base / f"{key}.start"),
        log=str(base / f"{key}.log"),
    )


def fingerprint(env: Mapping[str, str] | None = None) -> str:
    """A digest of this build: hybridml's source files (path, size, mtime), the interpreter, the installed
    packages (the site-packages folders' mtimes change when a package is added, removed or upgraded) and
    the environment variables that take effect at import. Costs about a millisecond.
    """
    env = os.environ if env is None else env
    if env.get(FINGERPRINT_ENV):
        return env[FINGERPRINT_ENV]
    digest = hashlib.sha256()
    digest.update(f"{hybridml.__version__}\0{sys.executable}\0{sys.version}\0".encode())
    package = Path(hybridml.__file__).parent
    for path in sorted(_sources(str(package))):
        info = os.stat(path)
        digest.update(f"{os.path.relpath(path, package)}\0{info.st_size}\0{info.st_mtime_ns}\0".encode())
    for folder in sys.path:
        if folder.endswith("site-packages") and os.path.isdir(folder):
            digest.update(f"{folder}\0{os.stat(folder).st_mtime_ns}\0".encode())
    for name in IMPORT_TIME_ENV:
        digest.update(f"{name}={env.get(name, '')}\0".encode())
    return "sha256:" + digest.hexdigest()


def _sources(folder: str) -> list[str]:
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False) and entry.name != "__pycache__":
                found.extend(_sources(entry.path))
            elif entry.name.endswith((".py", ".yaml")):
                found.append(entry.path)
    return found
