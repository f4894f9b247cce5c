"""Wall time of a full local pipeline run per branch, time per step, and step overhead vs bare kfp.local.

Run: `make benchmark` (or `.venv/bin/python benchmarks/pipeline.py [--trials 20]`). Prints figures; asserts nothing.
Targets on a 2-core machine: direct branch ≤ 45 s, HPO branch with 20 trials ≤ 90 s, overhead ratio ≤ 1.2.
"""

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

from kfp import dsl, local

from hybridml.config import Settings
from hybridml.core import data
from hybridml.pipelines import local_run


@dsl.component(install_kfp_package=False)
def noop(x: int) -> int:
    """A step that does nothing: what kfp.local costs by itself."""
    return x


def bare_chain(n_steps: int, root: Path) -> float:
    """Seconds per step of a chain of ``n_steps`` no-op components under the same runner."""

    @dsl.pipeline(name="bare-chain")
    def chain() -> int:
        task = noop(x=0).set_caching_options(False)
        for _ in range(n_steps - 1):
            task = noop(x=task.output).set_caching_options(False)
        return task.output

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chain()
    return (time.perf_counter() - start) / n_steps


def measured_run(home: Path, arguments: dict[str, object]) -> tuple[local_run.LocalRun, dict[str, float], int]:
    """One pipeline run; returns the run, seconds per step, and how many components ran."""
    settings = Settings.from_env({}, home=home)
    os.environ["HYBRIDML_HOME"] = str(home)
    run = local_run.run(settings, {"hpo_storage": settings.hpo_storage, **arguments}, progress=None)
    steps = {e["step"]: float(e["seconds"]) for e in run.steps if e["event"] == "end"}
    return run, steps, len(steps)


def report(label: str, run: local_run.LocalRun, steps: dict[str, float], per_noop: float) -> tuple[float, float]:
    """Print one run's figures; return the overhead ratio per step without and with the one-time warm-up."""
    outside = run.seconds - sum(steps.values())
    overhead = (outside - run.warmup_seconds) / len(steps)
    amortised = outside / len(steps)
    print(
        f"\n== {label}: {run.seconds:.1f} s wall, branch={run.summary['branch']}, "
        f"status={run.summary['approval_status']}, roc_auc={run.summary['roc_auc']:.4f}"
    )
    print(f"   warm-up (step interpreter preloads kfp, MLflow, pandas, scikit-learn once) {run.warmup_seconds:6.2f} s")
    for name, seconds in steps.items():
        print(f"   {name:<22} {seconds:6.2f} s")
    print(f"   overhead per step      {overhead:6.2f} s", end="  ")
    print(f"(bare kfp.local no-op step {per_noop:.2f} s, ratio {overhead / per_noop:.2f};", end=" ")
    print(f"with the warm-up spread over the steps {amortised:.2f} s, ratio {amortised / per_noop:.2f})")
    return overhead / per_noop, amortised / per_noop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hybridml-bench-") as tmp:
        root = Path(tmp)
        per_noop = bare_chain(9, root / "bare")
        direct, direct_steps, n_direct = measured_run(root / "home", {})
        hard, target = data.synthetic_hard()
        hard_csv = root / "hard.csv"
        hard.to_csv(hard_csv, index=False)
        hpo, hpo_steps, _ = measured_run(
            root / "home", {"data_uri": str(hard_csv), "target": target, "model_name": "hard", "n_trials": args.trials}
        )
        from hybridml.deploy import LocalConfig, make_target

        target = make_target(LocalConfig(root / "home" / "deployments"))
        for deployment in target.list():
            target.delete(deployment.name)
    print(f"bare kfp.local chain: {per_noop:.2f} s per no-op step (9 steps, one run)")
    r1, a1 = report(f"direct branch ({n_direct} steps)", direct, direct_steps, per_noop)
    r2, a2 = report(f"HPO branch ({args.trials} trials)", hpo, hpo_steps, per_noop)
    figures = {
        "direct_s": round(direct.seconds, 1),
        "hpo_s": round(hpo.seconds, 1),
        "noop_step_s": round(per_noop, 2),
        "warmup_s": [round(direct.warmup_seconds, 2), round(hpo.warmup_seconds, 2)],
        "overhead_ratio_direct": round(r1, 2),
        "overhead_ratio_hpo": round(r2, 2),
        "overhead_ratio_with_warmup": [round(a1, 2), round(a2, 2)],
        "targets": {"direct_s": 45, "hpo_s": 90, "overhead_ratio": 1.2},
    }
    print("\n" + json.dumps(figures))


if __name__ == "__main__":
    main()
