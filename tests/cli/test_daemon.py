"""The daemon behind `hybridml`: started on first use, reused, isolated per command, replaced when stale, idle-stopped.

Each test has its own home (so its own daemon) and stops it at the end. Commands go through the launcher
(``python -m hybridml.launcher``, the console script's code) with ``HYBRIDML_DAEMON=1``; the wire-level
cases (stdin, signals, isolation) send module requests, the kind the pipeline's step launcher sends.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hybridml import launcher
from hybridml.daemon import client, identity

# Sends one module request to HOME's daemon as the step launcher does; exit 99 when it did not run there.
CALL = """
import os, sys
import hybridml
from hybridml.daemon import identity, wire
home, module, *argv = sys.argv[1:]
request = {"kind": "module", "module": module, "argv": argv, "env": dict(os.environ), "cwd": os.getcwd(),
           "stdio": wire.stdio(), "version": hybridml.__version__, "fingerprint": identity.fingerprint()}
outcome = wire.call(identity.locate(home).socket, request)
sys.exit(99) if outcome is None else wire.exit_like(*outcome)
"""

# Run as `python -m probe` from its folder: reports what it inherited, then changes what it could leak.
PROBE = """
import json, os, sys
print(json.dumps({"cwd": os.getcwd(), "mine": os.environ.get("PROBE_MINE"), "leak_env": os.environ.get("PROBE_LEAK"),
                  "leak_module": getattr(json, "probe_leak", None), "pid": os.getpid(), "ppid": os.getppid()}))
os.environ["PROBE_LEAK"] = "from an earlier command"
json.probe_leak = "from an earlier command"
"""


@dataclass
class Home:
    """A home with its own daemon; ``cli`` runs `hybridml --home HOME ...` through the launcher."""

    path: Path
    env: dict[str, str] = field(default_factory=dict)

    def cli(
        self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hybridml.launcher", "--home", str(self.path), *args],
            capture_output=True, text=True, timeout=120, env={**self.env, **(env or {})}, cwd=cwd, check=False,
        )  # fmt: skip

    def call(self, module: str, *argv: str, stdin: str = "", env: dict[str, str] | None = None,
             cwd: Path | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return subprocess.run(
            [sys.executable, "-c", CALL, str(self.path), module, *argv], input=stdin,
            capture_output=True, text=True, timeout=60, env={**self.env, **(env or {})}, cwd=cwd, check=False,
        )  # fmt: skip

    def status(self) -> dict[str, object]:
        result = self.cli("daemon", "status", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYBRIDML_", "MLFLOW_"))}
    env.update({"HYBRIDML_DAEMON": "1", "HYBRIDML_DAEMON_IDLE_S": "120"})
    subject = Home(tmp_path / "home", env)
    yield subject
    info = subject.status()
    subject.cli("daemon", "stop")
    if info.get("running"):
        assert not client.alive(int(info["pid"])), "daemon still running after `daemon stop`"  # type: ignore[arg-type]
    location = _location(subject)
    for leftover in (location.lock, location.start_lock, location.log):
        Path(leftover).unlink(missing_ok=True)


def _location(home: Home) -> identity.Location:
    return identity.locate(str(home.path.resolve()))


def test_first_command_starts_the_daemon_and_the_next_reuses_it(home: Home) -> None:
    assert home.status() == {"running": False, "home": str(home.path.resolve()), "socket": _location(home).socket}
    began = time.perf_counter()
    first = home.cli("models", "list", "--json")
    cold = time.perf_counter() - began
    assert (first.returncode, first.stdout.strip()) == (0, "[]"), first.stderr
    started = home.status()
    assert started["running"] is True
    assert started["current"] is True  # this build's daemon
    assert started["home"] == str(home.path.resolve())
    assert started["version"] == "0.1.0"
    assert started["idle_timeout_s"] == 120.0
    assert started["served"] == 1
    assert started["running_commands"] == 0
    deadline = time.monotonic() + 60
    while "read" not in home.status()["loaded"]:  # type: ignore[operator]  # imported once the command ended
        assert time.monotonic() < deadline, "the daemon did not load what reads import"
        time.sleep(0.2)
    assert started["socket"] == _location(home).socket
    assert len(str(started["socket"]).encode()) < 108
    assert os.stat(str(started["socket"])).st_mode & 0o077 == 0

    began = time.perf_counter()
    second = home.cli("models", "list", "--json")
    warm = time.perf_counter() - began
    assert (second.returncode, second.stdout.strip()) == (0, "[]"), second.stderr
    again = home.status()
    assert again["pid"] == started["pid"]
    assert again["served"] == 2
    assert warm < cold, f"warm {warm:.2f}s is not faster than cold {cold:.2f}s"


def test_exit_code_and_streams_of_a_failing_command_come_through(home: Home) -> None:
    failed = home.cli("models", "show", "nope")
    assert failed.returncode == 3, failed.stderr
    assert failed.stdout == ""
    assert failed.stderr.strip() == "error: model 'nope' not found"
    usage = home.cli("models", "show")  # a usage error is click's exit 2, in the same words as in-process
    assert usage.returncode == 2, usage.stderr
    assert "Missing argument 'ref'." in usage.stderr
    assert "Usage: hybridml models show" in usage.stderr
    assert home.status()["served"] == 2


def _at_once(home: Home, *commands: list[str]) -> list[tuple[int, str, str]]:
    args = [sys.executable, "-m", "hybridml.launcher", "--home", str(home.path)]
    running = [
        subprocess.Popen([*args, *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=home.env)
        for command in commands
    ]
    results = []
    for process in running:
        out, err = process.communicate(timeout=120)
        results.append((process.returncode, out, err))
    return results


def test_two_commands_at_once_both_succeed_with_one_daemon(home: Home) -> None:
    # Two first commands at once: one starts the daemon, the other waits for it instead of starting a second.
    help_all, help_models = _at_once(home, ["--help"], ["models", "--help"])
    assert help_all[0] == 0 and "Usage: hybridml [OPTIONS] COMMAND" in help_all[1], help_all[2]
    assert help_models[0] == 0 and "Usage: hybridml models [OPTIONS] COMMAND" in help_models[1], help_models[2]
    assert home.status()["served"] == 2
    # Two commands on the store at once (created first: MLflow's first schema creation is not concurrent-safe).
    assert home.cli("models", "list").returncode == 0
    listing, showing = _at_once(home, ["models", "list", "--json"], ["models", "show", "nope"])
    assert (listing[0], listing[1].strip()) == (0, "[]"), listing[2]
    assert (showing[0], showing[1], showing[2].strip()) == (3, "", "error: model 'nope' not found")
    assert home.status()["served"] == 5


def test_a_daemon_of_another_build_is_replaced_never_used(home: Home) -> None:
    stale = home.cli("--help", env={identity.FINGERPRINT_ENV: "sha256:another-build"})
    assert stale.returncode == 0, stale.stderr
    old = home.status()
    assert old["fingerprint"] == "sha256:another-build"
    assert old["current"] is False

    # A step launcher of another build is refused (it then runs the step itself) and does not stop the daemon.
    refused = home.call("json.tool", stdin="{}")
    assert refused.returncode == 99
    assert home.status()["pid"] == old["pid"]

    # A command of this build stops it and runs in a fresh daemon of its own build.
    helped = home.cli("models", "--help")
    assert (helped.returncode, helped.stderr) == (0, "")
    assert "Usage: hybridml models [OPTIONS] COMMAND" in helped.stdout
    new = home.status()
    assert new["pid"] != old["pid"]
    assert new["current"] is True
    assert new["served"] == 1  # the command ran in the new daemon, not the stale one
    deadline = time.monotonic() + 10
    while client.alive(int(old["pid"])) and time.monotonic() < deadline:  # type: ignore[arg-type]
        time.sleep(0.05)
    assert not client.alive(int(old["pid"]))  # type: ignore[arg-type]
    assert "replaces it" in Path(str(new["log"])).read_text()


def test_the_daemon_stops_after_its_idle_timeout(home: Home) -> None:
    result = home.cli("--help", env={"HYBRIDML_DAEMON_IDLE_S": "2"})
    assert result.returncode == 0
    assert "Usage: hybridml" in result.stdout
    info = home.status()
    assert info["running"] is True
    assert info["idle_timeout_s"] == 2.0
    deadline = time.monotonic() + 15
    while client.alive(int(info["pid"])) and time.monotonic() < deadline:  # type: ignore[arg-type]
        time.sleep(0.1)
    assert time.monotonic() < deadline, "daemon outlived its idle timeout"
    assert not os.path.exists(_location(home).socket)
    assert home.status()["running"] is False


def test_daemon_off_runs_in_process_and_starts_nothing(home: Home) -> None:
    usage = home.cli("models", "show", env={"HYBRIDML_DAEMON": "0"})
    assert usage.returncode == 2, usage.stderr
    assert "Usage: python -m hybridml.launcher models show" in usage.stderr  # click named this process
    assert home.status()["running"] is False
    assert not os.path.exists(_location(home).socket)


def test_a_socket_folder_others_could_enter_is_refused_and_the_command_runs_in_process(home: Home) -> None:
    temp = Path(tempfile.mkdtemp(prefix="hm-", dir="/tmp"))  # short: a deep path would not be used at all
    try:
        shared = temp / f"hybridml-{os.getuid()}"
        shared.mkdir(mode=0o755)
        shared.chmod(0o755)  # another user could stand in for the daemon here
        result = home.cli("--help", env={"TMPDIR": str(temp), "XDG_RUNTIME_DIR": ""})
        assert result.returncode == 0
        assert "Usage: python -m hybridml.launcher" in result.stdout  # ran in-process
        assert result.stderr == "hybridml: daemon unavailable, running in-process\n"
        assert list(shared.iterdir()) == []
    finally:
        shutil.rmtree(temp)


def test_stop_ends_the_daemon_and_the_next_command_starts_a_fresh_one(home: Home) -> None:
    assert home.cli("--help").returncode == 0
    first = home.status()
    stopped = home.cli("daemon", "stop")
    assert (stopped.returncode, stopped.stderr.strip()) == (0, f"stopped daemon {first['pid']} of {first['home']}")
    assert not client.alive(int(first["pid"]))  # type: ignore[arg-type]
    assert home.status()["running"] is False
    again = home.cli("daemon", "stop")
    assert (again.returncode, again.stderr.strip()) == (0, f"no daemon runs for {first['home']}")
    assert home.cli("--help").returncode == 0
    assert home.status()["pid"] != first["pid"]


def test_stdin_stdout_and_exit_code_pass_through(home: Home) -> None:
    assert home.cli("--help").returncode == 0
    pretty = home.call("json.tool", "--sort-keys", stdin='{"b": 1, "a": [2]}')
    assert pretty.returncode == 0, pretty.stderr
    assert pretty.stdout == '{\n    "a": [\n        2\n    ],\n    "b": 1\n}\n'
    broken = home.call("json.tool", stdin="{not json")
    assert broken.returncode == 1
    assert broken.stdout == ""
    assert "Expecting property name enclosed in double quotes" in broken.stderr
    assert home.status()["served"] == 3


def test_each_command_gets_its_own_environment_and_directory_and_leaks_nothing(home: Home, tmp_path: Path) -> None:
    assert home.cli("--help").returncode == 0
    work = tmp_path / "work"
    work.mkdir()
    (work / "probe.py").write_text(PROBE)
    first = home.call("probe", env={"PROBE_MINE": "one"}, cwd=work)
    second = home.call("probe", env={"PROBE_MINE": "two"}, cwd=work)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    one, two = json.loads(first.stdout), json.loads(second.stdout)
    daemon_pid = home.status()["pid"]
    assert (one["cwd"], one["mine"], one["leak_env"], one["leak_module"]) == (str(work), "one", None, None)
    assert (two["cwd"], two["mine"], two["leak_env"], two["leak_module"]) == (str(work), "two", None, None)
    assert one["ppid"] == two["ppid"] == daemon_pid  # forked by the daemon
    assert one["pid"] != two["pid"]


def test_a_signal_to_the_client_stops_the_command(home: Home) -> None:
    assert home.cli("--help").returncode == 0
    caller = subprocess.Popen(
        [sys.executable, "-c", CALL, str(home.path), "json.tool"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=home.env,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while home.status()["running_commands"] != 1:  # json.tool now waits for stdin in the daemon's child
        assert time.monotonic() < deadline and caller.poll() is None
        time.sleep(0.05)
    caller.send_signal(signal.SIGINT)
    caller.wait(timeout=30)  # stdin stays open: only the relayed signal can end the child
    _, err = caller.communicate()
    assert caller.returncode == -signal.SIGINT  # died by the same signal, as an interrupted process does
    assert "KeyboardInterrupt" in err
    assert home.status()["running_commands"] == 0


def test_the_launcher_imports_only_the_standard_library() -> None:
    code = (
        "import sys, hybridml.launcher, hybridml.daemon.client, hybridml.daemon.identity as i; i.fingerprint(); "
        "heavy = {'typer', 'click', 'rich', 'mlflow', 'pandas', 'numpy', 'sklearn', 'kfp', 'hybridml.cli'}; "
        "print(sorted(m for m in sys.modules if m in heavy or m.split('.')[0] in heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], (None, None)),
        (["--help"], (None, None)),
        (["models", "list"], (None, "models")),
        (["--home", "h", "-v", "run", "--home", "x"], ("h", "run")),
        (["--home=h2", "daemon", "status"], ("h2", "daemon")),
        (["-v", "--home"], (None, None)),
    ],
)
def test_root_options_find_the_home_and_the_command(argv: list[str], expected: tuple[str | None, str | None]) -> None:
    assert identity.root_options(argv) == expected


@pytest.mark.parametrize(
    ("value", "expected"), [(None, 900.0), ("2.5", 2.5), ("0", 900.0), ("-1", 900.0), ("soon", 900.0)]
)
def test_idle_timeout_comes_from_the_environment(value: str | None, expected: float) -> None:
    assert identity.idle_timeout({} if value is None else {identity.IDLE_ENV: value}) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", False),
        ("off", False),
        ("1", True),
        ("yes", True),
        ("", launcher.DAEMON_BY_DEFAULT),
        (None, launcher.DAEMON_BY_DEFAULT),
    ],
)
def test_hybridml_daemon_turns_it_on_and_off(value: str | None, expected: bool) -> None:
    assert launcher.daemon_enabled({} if value is None else {"HYBRIDML_DAEMON": value}) is expected
