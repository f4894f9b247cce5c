"""Wall time of `hybridml` commands in-process, cold (daemon not running) and warm (daemon running), vs MLflow's CLI.

Run: `make benchmark-cli` (or `.venv/bin/python benchmarks/cli.py [--repeats 3] [--warm-repeats 5]`). Prints
figures; asserts nothing. Works on its own temporary homes and removes them, their endpoints and daemons.

- in-process: ``HYBRIDML_DAEMON=0``, every command imports what it needs (what the CLI did before the daemon);
- cold: ``HYBRIDML_DAEMON=1`` with no daemon running: the command starts the home's daemon and runs in it;
- warm: the daemon runs and has served that kind of command once (its imports are loaded);
- peer: MLflow's own CLI on the same store (``MLFLOW_TRACKING_URI=sqlite:///HOME/mlflow.db``): ``mlflow
  experiments search``, and ``mlflow runs list`` as the closest read to a model listing (MLflow's CLI has no
  registered-model command).

Targets (issue 11, on a 2-core machine): every read ≤ 1.0 s warm and ≤ 4 s cold; a bad `run` argument or
column reported ≤ 1.5 s; the direct branch ≤ 8 s cold and ≤ 4 s on a repeated run; every read at least 3×
faster than MLflow's CLI (against the faster of its two reads).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hybridml.daemon import client, identity

BIN = Path(sys.executable).parent
MODEL = "hybridml-model"
READS: dict[str, list[str]] = {
    "--help": ["--help"],
    "models list": ["models", "list"],
    "models show NAME": ["models", "show", MODEL],
    "models show nope (not found)": ["models", "show", "nope"],
    "models history NAME": ["models", "history", MODEL],
    "endpoints list": ["endpoints", "list"],
}
BAD_RUN = ["run", "--target", "no_such_column", "--json"]
EXPECTED_CODE = {"models show nope (not found)": 3}


@dataclass
class Timed:
    """Median wall seconds of a command over repeats, and the exit codes seen."""

    seconds: float
    codes: set[int]

    def cell(self, expected: int = 0) -> str:
        mark = "" if self.codes == {expected} else f" (exit {sorted(self.codes)})"
        return f"{self.seconds:6.2f}s{mark}"


def hybridml_command() -> list[str]:
    """The console script when it is the launcher, else the launcher module (same code either way)."""
    script = BIN / "hybridml"
    if script.is_file() and "hybridml.launcher" in script.read_text(errors="replace"):
        return [str(script)]
    return [sys.executable, "-m", "hybridml.launcher"]


class Bench:
    """Runs commands against one home and times them."""

    def __init__(self, home: Path, base_env: dict[str, str]) -> None:
        self.home = home
        self.base_env = base_env
        self.command = hybridml_command()

    def env(self, daemon: bool) -> dict[str, str]:
        return {**self.base_env, "HYBRIDML_DAEMON": "1" if daemon else "0"}

    def once(self, args: Sequence[str], daemon: bool) -> tuple[float, subprocess.CompletedProcess[str]]:
        began = time.perf_counter()
        result = subprocess.run(
            [*self.command, "--home", str(self.home), *args],
            capture_output=True, text=True, env=self.env(daemon), timeout=600, check=False,
        )  # fmt: skip
        return time.perf_counter() - began, result

    def timed(self, args: Sequence[str], repeats: int, *, daemon: bool, cold: bool = False) -> Timed:
        times, codes = [], set()
        for _ in range(repeats):
            if cold:
                self.stop_daemon()
            seconds, result = self.once(args, daemon)
            times.append(seconds)
            codes.add(result.returncode)
        return Timed(statistics.median(times), codes)

    def warm(self, args: Sequence[str], repeats: int) -> Timed:
        self.once(args, daemon=True)  # the daemon loads what this kind of command imports, once
        return self.timed(args, repeats, daemon=True)

    def stop_daemon(self) -> None:
        client.stop(str(self.home))

    def forget(self) -> None:
        """Remove the stopped daemon's lock and log files from the runtime folder."""
        location = identity.locate(str(self.home))
        for leftover in (location.lock, location.start_lock, location.log):
            Path(leftover).unlink(missing_ok=True)

    def mlflow(self, args: Sequence[str], repeats: int) -> Timed:
        env = {**self.base_env, "MLFLOW_TRACKING_URI": f"sqlite:///{self.home / 'mlflow.db'}"}
        times, codes = [], set()
        for _ in range(repeats):
            began = time.perf_counter()
            result = subprocess.run(
                [str(BIN / "mlflow"), *args], capture_output=True, text=True, env=env, cwd=self.home, check=False
            )
            times.append(time.perf_counter() - began)
            codes.add(result.returncode)
        return Timed(statistics.median(times), codes)

    def run(self, daemon: bool) -> tuple[float, dict[str, object]]:
        seconds, result = self.once(["run", "--json"], daemon)
        if result.returncode != 0:
            raise SystemExit(f"run failed (exit {result.returncode}): {result.stderr.strip()[-800:]}")
        return seconds, json.loads(result.stdout)

    def cleanup(self) -> None:
        listing = subprocess.run(
            [*self.command, "--home", str(self.home), "endpoints", "list", "--json"],
            capture_output=True, text=True, env=self.env(False), check=False,
        )  # fmt: skip
        for deployment in json.loads(listing.stdout or "[]") if listing.returncode == 0 else []:
            subprocess.run(
                [*self.command, "--home", str(self.home), "endpoints", "delete", deployment["name"]],
                capture_output=True, env=self.env(False), check=False,
            )  # fmt: skip
        self.stop_daemon()
        self.forget()


def verdict(value: float, limit: float, *, at_least: bool = False) -> str:
    met = value >= limit if at_least else value <= limit
    return "met" if met else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="repeats of in-process, cold and MLflow figures")
    parser.add_argument("--warm-repeats", type=int, default=5, help="repeats of warm figures")
    options = parser.parse_args()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("HYBRIDML_", "MLFLOW_"))}
    root = Path(tempfile.mkdtemp(prefix="hybridml-bench-cli-"))
    served = Bench(root / "home", base_env)  # reads, the daemon's runs
    plain = Bench(root / "home-in-process", base_env)  # in-process runs on a home of their own
    print(f"hybridml CLI benchmark: {os.cpu_count()} CPUs, command {' '.join(served.command)}, homes under {root}")
    try:
        # Runs first: a fresh home each, then the same run again.
        first_daemon, summary = served.run(daemon=True)  # no daemon runs yet: cold
        repeat_daemon, repeat_summary = served.run(daemon=True)
        first_plain, plain_summary = plain.run(daemon=False)
        repeat_plain, _ = plain.run(daemon=False)
        plain.cleanup()
        print(f"run (direct branch {summary['branch']}): first {first_daemon:.2f}s cold, {repeat_daemon:.2f}s repeated "
              f"(pipeline {summary['seconds']}s / {repeat_summary['seconds']}s); in-process {first_plain:.2f}s / "
              f"{repeat_plain:.2f}s (pipeline {plain_summary['seconds']}s)")  # fmt: skip

        rows: list[tuple[str, Timed, Timed, Timed]] = []
        for label, args in {**READS, "run --target WRONG (bad column)": BAD_RUN}.items():
            in_process = served.timed(args, options.repeats, daemon=False)
            cold = served.timed(args, options.repeats, daemon=True, cold=True)
            warm = served.warm(args, options.warm_repeats)
            rows.append((label, in_process, cold, warm))
        status = client.status(str(served.home))
        experiments = served.mlflow(["experiments", "search"], options.repeats)
        listed = json.loads(served.once(["models", "list", "--json"], daemon=True)[1].stdout or "[]")
        experiment_id = "1"
        search = subprocess.run(
            [str(BIN / "mlflow"), "experiments", "search"], capture_output=True, text=True, check=False,
            env={**base_env, "MLFLOW_TRACKING_URI": f"sqlite:///{served.home / 'mlflow.db'}"}, cwd=served.home,
        )  # fmt: skip
        for line in search.stdout.splitlines():
            if line.split()[1:2] == ["hybridml"]:
                experiment_id = line.split()[0]
        runs = served.mlflow(["runs", "list", "--experiment-id", experiment_id], options.repeats)
        peer = min(experiments.seconds, runs.seconds)
    finally:
        served.cleanup()
        plain.cleanup()
        shutil.rmtree(root, ignore_errors=True)

    print(f"store: {len(listed)} registered model(s); daemon pid {status.get('pid')}, loaded {status.get('loaded')}")
    print(f"peer: mlflow experiments search {experiments.cell()}, mlflow runs list {runs.cell()}")
    print()
    header = f"{'command':34} {'in-process':>11} {'cold':>11} {'warm':>11}  {'peer/cold':>9} {'peer/warm':>9}"
    print(header)
    print("-" * len(header))
    for label, in_process, cold, warm in rows:
        expected = EXPECTED_CODE.get(label, 2 if label.startswith("run") else 0)
        ratios = "" if label.startswith("run") else f"  {peer / cold.seconds:8.1f}x {peer / warm.seconds:8.1f}x"
        print(f"{label:34} {in_process.cell(expected):>11} {cold.cell(expected):>11} {warm.cell(expected):>11}{ratios}")
    print()
    print("targets:")
    reads = [r for r in rows if not r[0].startswith("run")]
    worst_warm = max(reads, key=lambda r: r[3].seconds)
    worst_cold = max(reads, key=lambda r: r[2].seconds)
    slowest_ratio = min(peer / r[3].seconds for r in reads), min(peer / r[2].seconds for r in reads)
    bad = rows[-1]
    figures = [
        ("every read <= 1.0 s warm", f"slowest {worst_warm[3].seconds:.2f}s ({worst_warm[0]})",
         verdict(worst_warm[3].seconds, 1.0)),
        ("every read <= 4 s cold", f"slowest {worst_cold[2].seconds:.2f}s ({worst_cold[0]})",
         verdict(worst_cold[2].seconds, 4.0)),
        ("bad run column <= 1.5 s (cold)", f"{bad[2].seconds:.2f}s", verdict(bad[2].seconds, 1.5)),
        ("bad run column <= 1.5 s (warm)", f"{bad[3].seconds:.2f}s", verdict(bad[3].seconds, 1.5)),
        ("direct branch <= 8 s cold", f"{first_daemon:.2f}s", verdict(first_daemon, 8.0)),
        ("direct branch <= 4 s repeated", f"{repeat_daemon:.2f}s", verdict(repeat_daemon, 4.0)),
        ("reads >= 3x faster than MLflow CLI (warm)", f"worst {slowest_ratio[0]:.1f}x",
         verdict(slowest_ratio[0], 3.0, at_least=True)),
        ("reads >= 3x faster than MLflow CLI (cold)", f"worst {slowest_ratio[1]:.1f}x",
         verdict(slowest_ratio[1], 3.0, at_least=True)),
    ]  # fmt: skip
    for target, figure, result in figures:
        print(f"  {target:44} {figure:46} {result}")


if __name__ == "__main__":
    main()
