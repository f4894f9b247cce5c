"""Mutation testing with mutmut: the score per module, every surviving mutant, and the wall time.

Run: `make mutation` (every module of ``[tool.mutmut] only_mutate`` in pyproject.toml) or
`.venv/bin/python scripts/mutation.py src/hybridml/core/naming.py [--tests tests/unit/test_naming.py]`.

mutmut runs in ``build/mutation`` (ignored by git), on a copy of pyproject.toml whose ``[tool.mutmut]`` is narrowed
to the modules and tests asked for, so the working tree never gets a ``mutants/`` folder. Score = mutants killed
(by a failing test, a timeout or the type checker) / mutants tested; a mutant no test reaches counts as a survivor.
Exit status 1 when ``--min-score`` is given and not reached. ``--changed-since TAG`` keeps only the modules changed
since TAG.

The bounded run for CI (`make mutation-ci`) is a pinned sample. ``--pin-sample FILE``, after a full run of some
modules, adds a seeded sample of each one's mutants to FILE (each with its diff and verdict) and writes the score of
the whole sample and its threshold (that score less ``--margin`` points). ``--check-sample FILE`` runs exactly those
mutants again (``mutmut run NAME...``) and exits 1 when the sample's score is below the threshold or when a mutant
that was killed when pinned survives. A pinned mutant whose diff differs now (its function was edited, so mutmut's
number names another change) is reported as stale and left out; more than a quarter stale fails too (re-pin).

Mutants live in the copy mutmut makes of ``src``: code that a test runs in another process (a server started by
an integration test) imports the original package, so only in-process tests can kill mutants.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import random
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


# One process for every diff: `mutmut show NAME` starts Python and mutmut again for each mutant (about a second each).
_DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
found = {}
for key in json.load(sys.stdin):
    try:
        found[key] = get_diff_for_mutant(key)
    except Exception:  # a name mutmut no longer generates
        found[key] = ""
print(json.dumps(found))
"""


def changed_lines(workdir: Path, keys: list[str]) -> dict[str, str]:
    """The lines each mutant changes, as ``- old  |  + new`` on one line ("" for a name mutmut does not know)."""
    if not keys:
        return {}
    listed = subprocess.run(
        [sys.executable, "-c", _DIFFS], cwd=workdir, input=json.dumps(keys), capture_output=True, text=True, check=True
    )
    shown = {}
    for key, diff in json.loads(listed.stdout).items():
        lines = diff.splitlines()
        minus = [line[1:].strip() for line in lines if line.startswith("-") and not line.startswith("---")]
        plus = [line[1:].strip() for line in lines if line.startswith("+") and not line.startswith("+++")]
        shown[key] = f"- {' / '.join(minus)}  |  + {' / '.join(plus)}"[:300] if diff else ""
    return shown


def mutmut_run(workdir: Path, max_children: int, names: list[str]) -> tuple[dict[str, dict[str, str]], float] | None:
    """Run mutmut in ``workdir`` (only ``names`` if any): the verdict of every mutant by module, and the wall time."""
    started = time.monotonic()
    with (workdir / "mutmut.log").open("w") as log:
        run = subprocess.run(
            [str(MUTMUT), "run", "--max-children", str(max_children), *names],
            cwd=workdir,
            # mutmut forks its workers from a process that has trained models: XGBoost's and OpenMP's thread pools
            # then spin in every worker (each mutant hit the CPU limit and counted as a false kill). One thread each.
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    wall = time.monotonic() - started
    if run.returncode != 0:
        print(f"mutmut run failed (exit {run.returncode}); see {workdir}/mutmut.log", file=sys.stderr)
        return None
    return results(workdir), wall


def results(workdir: Path) -> dict[str, dict[str, str]]:
    """The verdict of every mutant of the run in ``workdir``, by module."""
    listed = subprocess.run(
        [str(MUTMUT), "results", "--all", "true"], cwd=workdir, capture_output=True, text=True, check=True
    ).stdout
    statuses: dict[str, dict[str, str]] = defaultdict(dict)
    for match in re.finditer(r"^\s+(\S+): (.+)$", listed, flags=re.MULTILINE):
        statuses[module_of(match[1])][match[1]] = match[2].strip()
    return statuses


def score_of(statuses: dict[str, str]) -> tuple[int, int]:
    """Killed and tested mutants among ``statuses`` (name to verdict)."""
    counts = Counter(statuses.values())
    tested = sum(n for status, n in counts.items() if status not in NOT_TESTED)
    return sum(counts[s] for s in KILLED), tested


def pin_sample(
    path: Path, workdir: Path, statuses: dict[str, str], modules: list[str], tests: list[str], args: argparse.Namespace
) -> None:
    """Pin a seeded sample of each module just run, with diffs and verdicts, in ``path`` (for ``--check-sample``).

    The modules of this run replace their earlier entries in ``path``; other modules' entries are kept, so the
    sample is built one module (run) at a time. Mutants killed only by a timeout are left out: a timeout depends on
    the machine's load, not on an assertion.
    """
    pinned = json.loads(path.read_text("utf-8")) if path.exists() else {"modules": [], "tests": [], "mutants": {}}
    dotted = {m.removeprefix("src/").removesuffix(".py").replace("/", ".") for m in modules}
    mutants = {key: entry for key, entry in pinned["mutants"].items() if module_of(key) not in dotted}
    draw = random.Random(args.seed)  # noqa: S311 (a reproducible draw, not a secret)
    for module in sorted(dotted):
        candidates = sorted(
            key
            for key, status in statuses.items()
            if module_of(key) == module and status not in NOT_TESTED and status != "timeout"
        )
        chosen = sorted(draw.sample(candidates, min(args.sample_size, len(candidates))))
        shown = changed_lines(workdir, chosen)
        mutants.update({key: {"status": statuses[key], "diff": shown[key]} for key in chosen})
    killed, tested = score_of({key: entry["status"] for key, entry in mutants.items()})
    score = round(100 * killed / tested, 1) if tested else 0.0
    pinned = {
        "modules": sorted({*pinned["modules"], *modules}),
        "tests": list(dict.fromkeys([*pinned["tests"], *tests])),
        "seed": args.seed,
        "score": score,
        "min_score": round(score - args.margin, 1),
        "mutants": dict(sorted(mutants.items())),
    }
    path.write_text(json.dumps(pinned, indent=1, ensure_ascii=False) + "\n", "utf-8")
    print(
        f"pinned {len(mutants)} mutants in {path}: score {killed}/{tested} = {score}%, threshold {pinned['min_score']}%"
    )


def check_sample(path: Path, args: argparse.Namespace) -> int:
    """Run the pinned mutants of ``path`` again; 1 when the sample's score or a once-killed mutant regressed."""
    pinned = json.loads(path.read_text("utf-8"))
    names = sorted(pinned["mutants"])
    prepare(args.workdir, pinned["modules"], pinned["tests"])
    print(f"checking {len(names)} pinned mutants of {len(pinned['modules'])} module(s) from {path}")
    ran = mutmut_run(args.workdir, args.max_children, names)
    if ran is None:
        return 2
    statuses = {key: status for by_key in ran[0].values() for key, status in by_key.items()}
    shown = changed_lines(args.workdir, names)
    stale = [key for key in names if key not in statuses or shown[key] != pinned["mutants"][key]["diff"]]
    current = {key: statuses[key] for key in names if key not in stale}
    regressed = [
        key for key, status in current.items() if pinned["mutants"][key]["status"] in KILLED and status not in KILLED
    ]
    killed, tested = score_of(current)
    score = 100 * killed / tested if tested else 0.0
    failed = False
    for key in stale:
        print(f"  stale (edited since pinned): {key}\n      was {pinned['mutants'][key]['diff']}")
    for key in regressed:
        print(f"  FAIL killed when pinned, now {current[key]}: {key}\n      {shown[key]}")
        failed = True
    if len(stale) * 4 > len(names):
        print(f"FAIL {len(stale)} of {len(names)} pinned mutants are stale: re-pin (see docs/mutation-report.md)")
        failed = True
    verdict = "FAIL" if score < pinned["min_score"] else "ok"
    failed = failed or verdict == "FAIL"
    print(
        f"sample score: {killed}/{tested} = {score:.1f}% (pinned {pinned['score']}%, threshold {pinned['min_score']}%)"
        f" {verdict}; {len(regressed)} once-killed mutant(s) survive; {len(stale)} stale"
    )
    print(f"mutation run wall time: {ran[1]:.1f} s ({args.max_children} children)")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help="source files or globs (default: [tool.mutmut] only_mutate)")
    parser.add_argument("--tests", nargs="+", help="pytest paths (default: [tool.mutmut] test selection)")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "mutation")
    parser.add_argument("--min-score", type=float, help="exit 1 when the total score (percent) is lower")
    parser.add_argument("--changed-since", metavar="REF", help="only the modules changed since REF (e.g. a tag)")
    parser.add_argument("--check-sample", type=Path, metavar="FILE", help="run the mutants pinned in FILE (CI gate)")
    parser.add_argument("--pin-sample", type=Path, metavar="FILE", help="after the run, pin a sample of it in FILE")
    parser.add_argument("--sample-size", type=int, default=25, help="mutants pinned per module (default 25)")
    parser.add_argument("--seed", type=int, default=12, help="seed of the --pin-sample draw (default 12)")
    parser.add_argument("--margin", type=float, default=2.0, help="points below the pinned score that still pass")
    parser.add_argument(
        "--pin-only", action="store_true", help="pin from the finished run in --workdir, without running mutmut again"
    )
    args = parser.parse_args()
    if args.check_sample:
        return check_sample(args.check_sample, args)

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
    if args.pin_only:
        if not args.pin_sample:
            parser.error("--pin-only needs --pin-sample FILE")
        everything = {key: status for by_key in results(args.workdir).values() for key, status in by_key.items()}
        pin_sample(args.pin_sample, args.workdir, everything, modules, tests, args)
        return 0
    prepare(args.workdir, modules, tests)
    print(f"mutating {len(modules)} module(s) with the tests in {' '.join(tests)}; log: {args.workdir}/mutmut.log")

    ran = mutmut_run(args.workdir, args.max_children, [])
    if ran is None:
        return 2
    statuses, wall = ran

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
        diffs = changed_lines(args.workdir, [key for _, key, _ in survivors])
        for _, key, status in survivors:
            print(f"  {key} [{status}]\n      {diffs[key]}")
    print(f"\nmutation run wall time: {wall:.1f} s ({args.max_children} children)")
    if args.pin_sample:
        everything = {key: status for by_key in statuses.values() for key, status in by_key.items()}
        pin_sample(args.pin_sample, args.workdir, everything, modules, tests, args)
    return 1 if args.min_score is not None and score < args.min_score else 0


if __name__ == "__main__":
    sys.exit(main())
