"""HPO benchmark on PostgreSQL from Debian: worker speed-up, per-trial storage overhead, compute saved by pruning.

Run: ``.venv/bin/python benchmarks/hpo.py [--trials 16] [--overhead-trials 100] [--seeds 10]``. Starts a
throw-away PostgreSQL (the test suite's ``start_postgres``), prints figures with their targets, asserts nothing.

- **Speed-up**: ``--trials`` CPU-bound trials (XGBoost, 300 rounds, ``n_jobs=1``, only the learning rate searched,
  so every trial costs the same) on one shared study, run by 1 worker process, then by 2 on a fresh study: the
  same :func:`hybridml.core.hpo.plan_study` / :func:`~hybridml.core.hpo.work` the pipeline's steps run. Wall time
  from the workers' start (forked after the imports) to the last worker's end. Target >= 0.8 x 2 = 1.6.
- **Storage overhead**: an instant objective, ``--overhead-trials`` trials through plan + one worker on PostgreSQL,
  minus the same number through :func:`~hybridml.core.hpo.optimize` in memory (same TPE sampler and pruner); per
  trial. Target <= 10 ms.
- **Pruning**: per seed, random search without pruning runs 20 trials of the XGBoost objective the HPO step uses
  (its search space, validation ROC AUC); TPE with the median pruner (core/hpo's study, on PostgreSQL) then runs
  until its best reaches random search's final best (at most 60 trials). Compute is boosting rounds actually
  trained (pruned trials stop early). Saved = random search's rounds / TPE's rounds to the same ROC AUC; the
  median over ``--seeds`` seeds is held to the target (>= 2x). Also printed: the ratio against the rounds random
  search spent up to its best trial only (a stricter reading), and the seeds where TPE never got there.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' PostgreSQL starter

from tests.integration.registry.conftest import Service, start_postgres

from hybridml.core import data, evaluate, hpo, model

_FORK = multiprocessing.get_context("fork")
RANDOM_TRIALS = 20


def problem(seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The HPO branch's synthetic table (baseline ROC AUC about 0.66), split 75/25."""
    frame, target = data.synthetic_hard(seed=seed, n_rows=1600)
    X, y = frame.drop(columns=[target]).to_numpy(), frame[target].to_numpy()  # noqa: N806
    cut = len(y) * 3 // 4
    return X[:cut], y[:cut], X[cut:], y[cut:]


def fixed_cost_objective(split: tuple[np.ndarray, ...]) -> hpo.Objective:
    X_train, y_train, X_valid, y_valid = split  # noqa: N806

    def objective(trial: optuna.Trial) -> float:
        rate = trial.suggest_float("learning_rate", 0.01, 0.3, log=True)
        estimator = model.build(model.XGBOOST, {"n_estimators": 300, "max_depth": 5, "learning_rate": rate}, seed=0)
        estimator.fit(X_train, y_train)
        return evaluate.roc(y_valid, model.positive_scores(estimator, X_valid)).roc_auc

    return objective


def _work(objective: hpo.Objective, storage: str, study: str, worker: int) -> None:
    hpo.work(objective, storage=storage, study_name=study, worker=worker)


def timed_workers(objective: hpo.Objective, storage: str, study: str, n_trials: int, workers: int) -> float:
    hpo.plan_study(n_trials=n_trials, storage=storage, study_name=study)
    processes = [_FORK.Process(target=_work, args=(objective, storage, study, w)) for w in range(workers)]
    start = time.perf_counter()
    for process in processes:
        process.start()
    for process in processes:
        process.join()
        if process.exitcode != 0:
            raise SystemExit(f"worker exited with {process.exitcode}")
    seconds = time.perf_counter() - start
    finished = optuna.load_study(study_name=study, storage=storage).get_trials(states=hpo.FINISHED)
    assert len(finished) == n_trials, f"{len(finished)} trials finished, {n_trials} planned"
    return seconds


def speed_up(storage: str, n_trials: int) -> float:
    objective = fixed_cost_objective(problem())
    one = timed_workers(objective, storage, "speed-1", n_trials, 1)
    two = timed_workers(objective, storage, "speed-2", n_trials, 2)
    ratio = one / two
    print(f"(a) speed-up of 2 workers over 1, {n_trials} CPU-bound trials on PostgreSQL: 1 worker {one:.1f} s,")
    print(f"    2 workers {two:.1f} s -> {ratio:.2f}x   target >= 1.60   {'PASS' if ratio >= 1.6 else 'MISS'}")
    return ratio


def storage_overhead(storage: str, n_trials: int) -> float:
    def instant(trial: optuna.Trial) -> float:
        return trial.suggest_float("x", 0.0, 1.0)

    start = time.perf_counter()
    hpo.optimize(instant, n_trials=n_trials, timeout_s=None, storage="", study_name="overhead-memory")
    memory = (time.perf_counter() - start) / n_trials
    start = time.perf_counter()
    hpo.optimize(instant, n_trials=n_trials, timeout_s=None, storage=storage, study_name="overhead-optuna")
    optuna_own = (time.perf_counter() - start) / n_trials
    start = time.perf_counter()
    hpo.plan_study(n_trials=n_trials, storage=storage, study_name="overhead-pg")
    hpo.work(instant, storage=storage, study_name="overhead-pg", worker=0)
    postgres = (time.perf_counter() - start) / n_trials
    extra_ms = (postgres - memory) * 1000
    print(f"(b) per-trial storage overhead, {n_trials} instant trials: in memory {memory * 1000:.1f} ms,")
    print(
        f"    PostgreSQL (plan + worker) {postgres * 1000:.1f} ms -> {extra_ms:.1f} ms per trial   target <= 10 ms   "
        f"{'PASS' if extra_ms <= 10 else 'MISS'}"
    )
    print(f"    (peer: Optuna's own study.optimize on the same PostgreSQL {optuna_own * 1000:.1f} ms per trial)")
    return extra_ms


def _rounds(trial: optuna.trial.FrozenTrial) -> int:
    # The pruning callback reports every boosting round, so a trial's reports are the rounds it trained.
    return len(trial.intermediate_values)


def pruning(storage: str, seeds: int) -> float:
    split = problem()
    objective = hpo.make_objective(model.XGBOOST, *split, seed=0)
    saved: list[float] = []
    strict: list[float] = []
    missed = 0
    for seed in range(seeds):
        random = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed), pruner=optuna.pruners.NopPruner()
        )
        random.optimize(objective, n_trials=RANDOM_TRIALS)
        target = random.best_value
        random_rounds = sum(_rounds(t) for t in random.trials)
        to_best = sum(_rounds(t) for t in random.trials[: random.best_trial.number + 1])

        def reached(study: optuna.Study, _trial: optuna.trial.FrozenTrial, target: float = target) -> None:
            done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if done and max(t.value or 0.0 for t in done) >= target:
                study.stop()

        tpe = hpo.optimize(
            objective,
            n_trials=3 * RANDOM_TRIALS,
            timeout_s=None,
            storage=storage,
            study_name=f"prune-{seed}",
            seed=1000 + seed,  # not the random search's seed: TPE's random start-up trials would repeat its first ones
            callbacks=[reached],
        )
        tpe_rounds = sum(_rounds(t) for t in tpe.trials)
        if tpe.best_value < target:
            missed += 1
        saved.append(random_rounds / tpe_rounds)
        strict.append(to_best / tpe_rounds)
        pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in tpe.trials)
        print(
            f"    seed {seed}: random best {target:.4f} after {random_rounds} rounds ({to_best} to its best trial); "
            f"TPE+median {tpe.best_value:.4f} after {tpe_rounds} rounds, {len(tpe.trials)} trials ({pruned} pruned)"
        )
    median = statistics.median(saved)
    print(
        f"(c) compute saved by pruning, {seeds} seeds: median {median:.2f}x fewer boosting rounds to random search's "
        f"final ROC AUC   target >= 2x   {'PASS' if median >= 2 else 'MISS'}"
    )
    print(
        f"    (min {min(saved):.2f}x, max {max(saved):.2f}x; against random's rounds up to its best trial only: "
        f"median {statistics.median(strict):.2f}x; TPE stopped short of the target in {missed} of {seeds} seeds)"
    )
    return median


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16, help="trials for the speed-up figure")
    parser.add_argument("--overhead-trials", type=int, default=100, help="instant trials for the overhead figure")
    parser.add_argument("--seeds", type=int, default=10, help="seeds for the pruning figure")
    parser.add_argument("--only", choices=("speedup", "overhead", "pruning"), help="run one figure only")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # figures show as they come
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    services: list[Service] = []
    uri, stop = start_postgres(services)
    try:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"PostgreSQL from Debian on {uri.split('@')[1].split('/')[0]}; {multiprocessing.cpu_count()} CPUs,")
        print(f"load average {load} at the start (other work on the machine slows (a) and (b), not (c))")
        figures: dict[str, Callable[[], Any]] = {
            "speedup": lambda: speed_up(uri, args.trials),
            "overhead": lambda: storage_overhead(uri, args.overhead_trials),
            "pruning": lambda: pruning(uri, args.seeds),
        }
        for name, figure in figures.items():
            if args.only in (None, name):
                figure()
    finally:
        stop()


if __name__ == "__main__":
    main()
