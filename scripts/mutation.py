"""Mutation testing with mutmut: the score per module, every surviving mutant, and the wall time.

Run: `make mutation` (every module of ``[tool.mutmut] only_mutate`` in pyproject.toml) or
`.venv/bin/python scripts/mutation.py src/hybridml/core/naming.py [--tests tests/unit/test_naming.py]`.

mutmut runs in ``build/mutation`` (ignored by git), on a copy of pyproject.toml whose ``[tool.mutmut]`` is narrowed
to the modules and tests asked for, so the working tree never gets a ``mutants/`` folder. Score = mutants killed
(by a failing test, a timeout or the type checker) / mutants tested; a mutant no test reaches counts as a survivor.
Exit status 1 when ``--min-score`` is given and not reached. ``--changed-since TAG`` keeps only the modules changed
since TAG: the bounded run for CI.

Mutants live in the copy mutmut makes of ``src``: code that a test runs in another process (a server started by
an integration test) imports the original package, so only in-process tests can kill mutants.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTMUT = Path(sys.executable).parent / "mutmut"
KILLED = {"killed", "timeout", "caught by type check"}
NOT_TESTED = {"skipped", "not checked"}
SKIPPED = {
    ".git",
    ".hypothesis",
    ".venv",
    ".tools",
    ".hybridml",
    "build",
    "dist",
    "mutants",
    "__pycache__",
    "mlruns",
    "mlflow.db",
}


def config() -> dict[str, object]:
    table: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["mutmut"]
    return table


def modules_for(patterns: list[str], excluded: list[str]) -> list[str]:
    """The Python files under src matching ``patterns`` (paths or globs), less ``excluded``, relative to ROOT."""
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "src").rglob("*.py"))
    chosen = [f for f in files if any(fnmatch.fnmatch(f, p) for p in patterns)]
    return [f for f in chosen if not any(fnmatch.fnmatch(f, p) for p in excluded) and not f.endswith("__init__.py")]


def changed_since(ref: str) -> list[str]:
    """Source files changed between ``ref`` and the working tree (committed or not)."""
    listed = subprocess.run(
        ["git", "diff", "--name-only", ref, "--", "src"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return listed.stdout.split()


def prepare(workdir: Path, modules: list[str], tests: list[str]) -> None:
    """``workdir`` with links to src and tests and a pyproject.toml whose [tool.mutmut] names only ``modules``."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    # Tests read files across the repository (docs, manifests, the Makefile): link them all and have mutmut copy
    # them next to the mutated source, where the tests run.
    also_copy = []
    for entry in sorted(ROOT.iterdir()):
        if entry.name in SKIPPED or entry.name == "pyproject.toml" or entry.name.endswith("_cache"):
            continue
        (workdir / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
        if entry.name not in ("src", "tests"):
            also_copy.append(entry.name)
    text = (ROOT / "pyproject.toml").read_text("utf-8")
    # Drop the project's [tool.mutmut] table (up to the next table header) and write the narrowed one.
    text = re.sub(r"^\[tool\.mutmut\]\n.*?(?=^\[)", "", text, flags=re.MULTILINE | re.DOTALL)
    settings = dict(config())
    settings.pop("do_not_mutate", None)  # already applied to ``modules``
    settings["only_mutate"] = modules
    settings["pytest_add_cli_args_test_selection"] = tests
    settings["also_copy"] = also_copy
    lines = [f"{key} = {json.dumps(value)}" for key, value in settings.items()]  # JSON scalars/lists are TOML
    (workdir / "pyproject.toml").write_text(text + "\n[tool.mutmut]\n" + "\n".join(lines) + "\n", "utf-8")


def module_of(key: str) -> str:
    """``hybridml.core.naming`` for a mutant key such as ``hybridml.core.naming.x_check_model_name__mutmut_3``."""
    return re.split(r"\.x(?:_|ǁ)", key, maxsplit=1)[0]


def changed_lines(workdir: Path, key: str) -> str:
    """The lines a mutant changes, as ``-old | +new`` on one line."""
    diff = subprocess.run(
        [str(MUTMUT), "show", key], cwd=workdir, capture_output=True, text=True, check=False, timeout=120
    ).stdout
    minus = [line[1:].strip() for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")]
    plus = [line[1:].strip() for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    return f"- {' / '.join(minus)}  |  + {' / '.join(plus)}"[:300]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help="source files or globs (default: [tool.mutmut] only_mutate)")
    parser.add_argument("--tests", nargs="+", help="pytest paths (default: [tool.mutmut] test selection)")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "mutation")
    parser.add_argument("--min-score", type=float, help="exit 1 when the total score (percent) is lower")
    parser.add_argument("--changed-since", metavar="REF", help="only the modules changed since REF (e.g. a tag)")
    args = parser.parse_args()

    settings = config()
    patterns = args.modules or list(settings["only_mutate"])  # type: ignore[call-overload]
    modules = modules_for(patterns, list(settings.get("do_not_mutate", [])))  # type: ignore[call-overload]
    if args.changed_since:
        changed = set(changed_since(args.changed_since))
        modules = [m for m in modules if m in changed]
        if not modules:
            print(f"no listed module changed since {args.changed_since}: nothing to mutate")
            return 0
    if not modules:
        parser.error(f"no module matches {patterns}")
    tests = args.tests or list(settings["pytest_add_cli_args_test_selection"])  # type: ignore[call-overload]
    prepare(args.workdir, modules, tests)
    print(f"mutating {len(modules)} module(s) with the tests in {' '.join(tests)}; log: {args.workdir}/mutmut.log")

    started = time.monotonic()
    with (args.workdir / "mutmut.log").open("w") as log:
        run = subprocess.run(
            [str(MUTMUT), "run", "--max-children", str(args.max_children)],
            cwd=args.workdir,
            # mutmut forks its workers from a process that has trained models: XGBoost's and OpenMP's thread pools
            # then spin in every worker (each mutant hit the CPU limit and counted as a false kill). One thread each.
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    wall = time.monotonic() - started
    if run.returncode != 0:
        print(f"mutmut run failed (exit {run.returncode}); see {args.workdir}/mutmut.log", file=sys.stderr)
        return 2
    listed = subprocess.run(
        [str(MUTMUT), "results", "--all", "true"], cwd=args.workdir, capture_output=True, text=True, check=True
    ).stdout
    statuses: dict[str, dict[str, str]] = defaultdict(dict)
    for match in re.finditer(r"^\s+(\S+): (.+)$", listed, flags=re.MULTILINE):
        statuses[module_of(match[1])][match[1]] = match[2].strip()

    total: Counter[str] = Counter()
    print(f"\n{'module':<40} {'killed':>7} {'tested':>7} {'score':>7}  other")
    for module in sorted(statuses):
        counts = Counter(statuses[module].values())
        total += counts
        tested = sum(n for status, n in counts.items() if status not in NOT_TESTED)
        killed = sum(counts[s] for s in KILLED)
        other = ", ".join(f"{s}: {n}" for s, n in sorted(counts.items()) if s not in KILLED)
        shown = f"{100 * killed / tested:.1f}%" if tested else "-"
        print(f"{module:<40} {killed:>7} {tested:>7} {shown:>7}  {other}")
    tested = sum(n for status, n in total.items() if status not in NOT_TESTED)
    killed = sum(total[s] for s in KILLED)
    score = 100 * killed / tested if tested else 0.0
    print(f"{'total':<40} {killed:>7} {tested:>7} {score:>6.1f}%")

    survivors = [
        (module, key, status)
        for module in sorted(statuses)
        for key, status in statuses[module].items()
        if status not in KILLED | NOT_TESTED
    ]
    if survivors:
        print(f"\nsurviving mutants ({len(survivors)}; `mutmut show NAME` in {args.workdir} for the diff):")
        for _, key, status in survivors:
            print(f"  {key} [{status}]\n      {changed_lines(args.workdir, key)}")
    print(f"\nmutation run wall time: {wall:.1f} s ({args.max_children} children)")
    return 1 if args.min_score is not None and score < args.min_score else 0


if __name__ == "__main__":
    sys.exit(main())
