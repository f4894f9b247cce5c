"""Drift benchmark: speed on 100k rows x 30 features (and Evidently on the same data), detection delay, false alarms.

Run: ``.venv/bin/python benchmarks/drift.py [--runs 7] [--no-evidently]``. Prints figures only (no assertion).

- **Speed**: :func:`hybridml.core.drift.compute_drift` over 100,000 rows x 30 features (25 numeric of several
  shapes, 5 categories), median of ``--runs`` runs; target <= 100 ms.
- **Evidently**: the same windows through Evidently's ``DataDriftPreset`` (its default per-column tests), in an
  isolated venv under ``build/evidently-env`` (created with ``.tools/bin/uv`` if missing; run in a subprocess so
  its dependencies never meet ours). Prints the time ratio and whether the per-feature decisions agree. Evidently
  needs the reference rows themselves; hybridml needs only the profile saved with the model.
- **Detection delay**: a stream of one row per request, reference rows first and then one feature shifted; the
  monitor checks the last 500 (or 2000) rows every 10 requests. Prints the requests from the shift to the first
  alarm naming exactly the shifted feature, and the alarms raised before the shift.
- **False alarms**: 100 windows resampled from the reference rows (with replacement), and 100 fresh windows from
  the same distribution; prints the share with ``drift`` true (target <= 5 %).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd

from hybridml.core.data import infer_schema
from hybridml.core.drift import DriftConfig, DriftResult, compute_drift
from hybridml.core.profile import ReferenceProfile, build_profile

ROOT = Path(__file__).resolve().parents[1]
EVIDENTLY_ENV = ROOT / "build" / "evidently-env"
UV = ROOT / ".tools" / "bin" / "uv"
N_ROWS = 100_000
N_NUMERIC, N_CATEGORY = 25, 5
CATEGORIES = ("a", "b", "c", "d", "e")
CATEGORY_P = (0.4, 0.25, 0.15, 0.12, 0.08)
SHIFTED = ("num_03", "num_11", "cat_2")
EVIDENTLY_RUNS = 2  # after one warm-up run; each takes tens of seconds here


def table(rng: np.random.Generator, n: int, *, shifted: bool = False) -> pd.DataFrame:
    """30 features of several shapes (normal, log-normal, uniform, zero-inflated, counts, categories)."""
    columns: dict[str, np.ndarray] = {}
    for i in range(N_NUMERIC):
        kind = i % 5
        if kind == 0:
            values = rng.normal(size=n)
        elif kind == 1:
            values = rng.lognormal(size=n)
        elif kind == 2:
            values = rng.uniform(0, 10, size=n)
        elif kind == 3:
            values = np.where(rng.random(n) < 0.6, 0.0, rng.exponential(2.0, size=n))
        else:
            values = rng.poisson(3.0, size=n).astype(np.float64)
        columns[f"num_{i:02d}"] = values
    for i in range(N_CATEGORY):
        columns[f"cat_{i}"] = rng.choice(CATEGORIES, size=n, p=CATEGORY_P)
    frame = pd.DataFrame(columns)
    if shifted:
        frame["num_03"] = frame["num_03"] + 0.5  # zero-inflated, moved by 0.5
        frame["num_11"] = frame["num_11"] * 1.3  # log-normal, scaled
        frame["cat_2"] = rng.choice(CATEGORIES, size=n, p=(0.25, 0.25, 0.2, 0.15, 0.15))
    return frame


def reference_profile(frame: pd.DataFrame) -> ReferenceProfile:
    labelled = frame.assign(y=np.where(np.arange(len(frame)) % 2 == 0, "no", "yes"))
    return build_profile(labelled, infer_schema(labelled, "y"), np.linspace(0, 1, 1000))


def speed(profile: ReferenceProfile, current: pd.DataFrame, runs: int) -> tuple[float, float, DriftResult]:
    """Median and fastest time (ms) of ``runs`` computations; the fastest is the least disturbed by other load."""
    timings = []
    result = compute_drift(profile, current)  # warm-up (first scipy calls)
    for _ in range(runs):
        start = time.perf_counter()
        result = compute_drift(profile, current)
        timings.append((time.perf_counter() - start) * 1000)
    return statistics.median(timings), min(timings), result


EVIDENTLY_SCRIPT = textwrap.dedent(
    """
    import json, statistics, sys, time
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    reference, current = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
    runs = int(sys.argv[3])
    numeric = [c for c in reference.columns if c.startswith("num_")]
    categorical = [c for c in reference.columns if c.startswith("cat_")]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    timings = []
    for _ in range(runs + 1):  # the first run warms up
        start = time.perf_counter()
        snapshot = Report([DataDriftPreset()]).run(
            Dataset.from_pandas(current, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
        )
        timings.append((time.perf_counter() - start) * 1000)
    decisions, methods = {}, {}
    p_value_methods = ("ks", "chisquare", "z", "fisher_exact", "t_test", "anderson", "cramer_von_mises", "mannw")
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if not config.get("type", "").endswith("ValueDrift"):
            continue
        method, threshold, value = config.get("method"), config.get("threshold"), metric["value"]
        # Evidently's rule: p-value tests drift below their threshold, distances at or above it.
        drifted = value < threshold if method in p_value_methods else value >= threshold
        decisions[config["column"]] = bool(drifted)
        methods[config["column"]] = method
    print(json.dumps({"ms": statistics.median(timings[1:]), "drifted": decisions, "methods": methods}))
    """
)


def evidently_env() -> tuple[Path | None, str]:
    """The Evidently venv's python, created if missing; or None and why not."""
    python = EVIDENTLY_ENV / "bin" / "python"
    if not python.exists():
        if not UV.exists():
            return None, f"{UV} not found (make setup installs it)"
        steps = [
            [str(UV), "venv", str(EVIDENTLY_ENV)],
            # Evidently 0.7 imports a pandas helper that pandas 3 removed: pin pandas below 3 in its venv.
            [str(UV), "pip", "install", "--python", str(python), "evidently", "pandas<3", "pyarrow"],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                return None, f"{' '.join(step[:3])} failed: {done.stderr.strip().splitlines()[-1:]}"
    check = subprocess.run(
        [str(python), "-c", "import evidently, pyarrow; print(evidently.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    if check.returncode != 0:
        return None, f"evidently does not import: {check.stderr.strip().splitlines()[-1:]}"
    return python, check.stdout.strip()


def evidently(reference: pd.DataFrame, current: pd.DataFrame, ours_ms: float, ours: DriftResult) -> None:
    python, version = evidently_env()
    if python is None:
        print(f"evidently: not run: {version}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        ref_path, cur_path, script = Path(tmp) / "ref.parquet", Path(tmp) / "cur.parquet", Path(tmp) / "ev.py"
        reference.to_parquet(ref_path)
        current.to_parquet(cur_path)
        script.write_text(EVIDENTLY_SCRIPT)
        done = subprocess.run(
            [str(python), str(script), str(ref_path), str(cur_path), str(EVIDENTLY_RUNS)],
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        print(f"evidently {version}: failed: {done.stderr.strip().splitlines()[-1:]}")
        return
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    theirs = figures["drifted"]
    mine = {name: f.drifted for name, f in ours.features.items()}
    differ = sorted(name for name in mine if theirs.get(name) != mine[name])
    methods = sorted(set(figures["methods"].values()))
    print(f"evidently {version} DataDriftPreset (methods {', '.join(methods)}): {figures['ms']:.0f} ms (median)")
    print(f"  ratio evidently / hybridml: {figures['ms'] / ours_ms:.1f}x")
    print(f"  evidently drifted: {sorted(n for n, d in theirs.items() if d)}")
    print(
        f"  decisions agree on {len(mine) - len(differ)} of {len(mine)} features"
        + (f"; differ: {differ}" if differ else "")
    )
    for name in differ:
        f = ours.features[name]
        print(
            f"    {name}: hybridml PSI {f.psi:.3f}, adjusted p {f.adjusted_p:.2g} (drifts at p < {ours.alpha} and"
            f" PSI >= {ours.min_psi}); evidently {figures['methods'][name]} says drifted={theirs.get(name)}"
        )


def detection_delay(profile: ReferenceProfile, rng: np.random.Generator, every: int = 10) -> None:
    before = table(rng, 2000)
    for shift, window in ((0.5, 500), (0.5, 2000), (0.25, 500), (1.0, 500)):
        after = table(rng, 3000)
        after["num_00"] = after["num_00"] + shift
        stream = pd.concat([before, after], ignore_index=True)
        alarms_before, delay = 0, None
        for end in range(window, len(stream) + 1, every):
            result = compute_drift(profile, stream.iloc[end - window : end])
            shifted_rows = end - len(before)
            if result.drift and shifted_rows <= 0:
                alarms_before += 1
            if shifted_rows > 0 and result.drifted_features == ["num_00"]:
                delay = shifted_rows
                break
        found = f"{delay} requests" if delay is not None else f"not within {len(after)} requests"
        print(
            f"detection delay, num_00 (normal) +{shift} sd, window {window}, check every {every}: {found}"
            f" (alarms before the shift: {alarms_before})"
        )


def false_alarms(profile: ReferenceProfile, reference: pd.DataFrame, rng: np.random.Generator, size: int) -> None:
    # Also without the minimum PSI: what the multiple-testing control alone gives (BH at 0.05 over 30 tests).
    tests_only = DriftConfig(min_psi=0.0)
    resampled = [reference.iloc[rng.integers(0, len(reference), size=size)] for _ in range(100)]
    fresh = [table(rng, size) for _ in range(100)]
    for label, windows in (("resamples of the reference", resampled), ("fresh draws", fresh)):
        alarms = sum(compute_drift(profile, w).drift for w in windows)
        by_test = sum(compute_drift(profile, w, config=tests_only).drift for w in windows)
        print(f"false alarms, window {size}, 100 {label}: {alarms} % ({by_test} % on the adjusted p-value alone)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--no-evidently", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(20261127)
    reference = table(rng, N_ROWS)
    current = table(rng, N_ROWS, shifted=True)
    profile = reference_profile(reference)
    ms, fastest, result = speed(profile, current, args.runs)
    print(
        f"hybridml drift, {N_ROWS} rows x {N_NUMERIC + N_CATEGORY} features: {ms:.1f} ms (median of {args.runs},"
        f" fastest {fastest:.1f} ms; target <= 100 ms; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})"
    )
    print(f"  drifted: {result.drifted_features} (shifted: {list(SHIFTED)})")
    if not args.no_evidently:
        evidently(reference, current, ms, result)
    detection_delay(profile, rng)
    for size in (1000, 10_000):
        false_alarms(profile, reference, rng, size)
    print(f"(python {sys.version.split()[0]}, numpy {np.__version__}, pandas {pd.__version__})")


if __name__ == "__main__":
    main()
