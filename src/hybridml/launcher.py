"""The `hybridml` entry point: hands the command to the home's warm daemon, or runs it in this process.

Importing typer, rich and MLflow costs seconds per command; a daemon per home (``hybridml.daemon``) keeps
them imported and forks a child per command, which takes on this process's arguments, environment, working
directory, stdin/stdout/stderr and signals, and whose exit status becomes ours. This module and everything
it imports on that path are standard library only, so handing a command over costs milliseconds.

``HYBRIDML_DAEMON=0`` runs every command in-process; so does any failure to start or reach a daemon. The
``daemon`` commands themselves always run in-process (asking about the daemon must not start one).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

# The one line to flip when the daemon becomes the default: False means only HYBRIDML_DAEMON=1 uses it.
DAEMON_BY_DEFAULT = True


def daemon_enabled(env: Mapping[str, str]) -> bool:
    """Whether commands go to the daemon: ``HYBRIDML_DAEMON`` (1/0) or the default above."""
    value = env.get("HYBRIDML_DAEMON", "").strip().lower()
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    return DAEMON_BY_DEFAULT


def main() -> None:
    """Console-script entry point."""
    argv = sys.argv[1:]
    if daemon_enabled(os.environ):
        from hybridml.daemon import client, identity, wire

        _, command = identity.root_options(argv)
        if command != "daemon":
            try:
                outcome = client.run(argv, identity.resolve_home(argv))
            except (OSError, RuntimeError, ValueError):  # e.g. an unusable home path: the CLI will say so
                outcome = None
            if outcome is not None:
                wire.exit_like(*outcome)
            if os.environ.get("HYBRIDML_DAEMON"):  # asked for explicitly: say why it is slow this time
                print("hybridml: daemon unavailable, running in-process", file=sys.stderr)
    from hybridml.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
