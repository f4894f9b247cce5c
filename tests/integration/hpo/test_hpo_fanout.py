"""HPO fanned out: a plan sets the budget, worker processes share it on one storage, a retried worker resumes."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

from hybridml.core import hpo
from hybridml.errors import InvalidInputError, NotFoundError

COMPLETE = optuna.trial.TrialState.COMPLETE
_FORK = multiprocessing.get_context("fork")


def _storage(backend: str, tmp_path: Path, postgres_uri: str) -> str:
    return {
        "journal": f"journal:{tmp_path / 'optuna.journal'}",
        "sqlite": f"sqlite:///{tmp_path / 'optuna.db'}",
        "postgresql": postgres_uri,
    }[backend]


def _worker_process(storage: str, study_name: str, worker: int, barrier: Any) -> None:
    first = [True]

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        if first[0]:  # each worker holds its first trial until the other has one too: both surely take part
            first[0] = False
            barrier.wait(60)
        return x

    hpo.work(objective, storage=storage, study_name=study_name, worker=worker, seed=7)


@pytest.mark.parametrize("backend", ["journal", "sqlite", "postgresql"])
def test_two_worker_processes_run_exactly_the_planned_trials(backend: str, tmp_path: Path, postgres_uri: str) -> None:
    storage, name = _storage(backend, tmp_path, postgres_uri), f"fan-{backend}"
    hpo.plan_study(n_trials=8, storage=storage, study_name=name, seed=7)
    barrier = _FORK.Barrier(2)
    workers = [_FORK.Process(target=_worker_process, args=(storage, name, w, barrier)) for w in (0, 1)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(120)
        assert process.exitcode == 0
    study = optuna.load_study(study_name=name, storage=hpo.storage_from_uri(storage))
    trials = study.get_trials(states=hpo.FINISHED)
    assert [t.number for t in trials] == list(range(8))
    assert [t.state for t in trials] == [COMPLETE] * 8
    # A trial drawn past the budget by a race at the very end is put back, never run: at most one per worker.
    assert all(t.state.name == "WAITING" and t.number >= 8 for t in study.trials[8:])
    assert len(study.trials) <= 10
    assert {t.user_attrs["worker"] for t in trials} == {0, 1}
    assert all(t.value == t.params["x"] for t in trials)
    # The workers' samplers are seeded apart (seed + worker): no two trials drew the same point.
    assert len({t.params["x"] for t in trials}) == 8


def test_the_budget_is_the_plans_and_planning_again_adds_nothing(tmp_path: Path) -> None:
    storage = f"journal:{tmp_path / 'j.log'}"
    assert hpo.plan_study(n_trials=3, storage=storage, study_name="p").user_attrs == {"n_trials": 3}
    assert hpo.work(lambda t: 0.5, storage=storage, study_name="p", worker=0) == 3
    hpo.plan_study(n_trials=3, storage=storage, study_name="p")  # a retried plan step
    assert hpo.work(lambda t: 0.5, storage=storage, study_name="p", worker=1) == 0
    # A larger budget on the same study runs only the difference.
    hpo.plan_study(n_trials=5, storage=storage, study_name="p")
    assert hpo.work(lambda t: 0.5, storage=storage, study_name="p", worker=1) == 2
    trials = optuna.load_study(study_name="p", storage=hpo.storage_from_uri(storage)).trials
    assert [(t.number, t.state, t.user_attrs["worker"]) for t in trials] == [
        (0, COMPLETE, 0),
        (1, COMPLETE, 0),
        (2, COMPLETE, 0),
        (3, COMPLETE, 1),
        (4, COMPLETE, 1),
    ]


def test_a_retried_worker_finishes_the_trial_its_dead_attempt_left_running(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    hpo.plan_study(n_trials=5, storage=storage, study_name="r")
    seen: list[tuple[int, int]] = []

    def dies_on_its_second_trial(trial: optuna.Trial) -> float:
        seen.append((0, trial.number))
        if len(seen) == 2:
            raise KeyboardInterrupt  # what a killed pod looks like: the trial is never told
        return trial.suggest_float("x", 0.0, 1.0)

    with pytest.raises(KeyboardInterrupt):
        hpo.work(dies_on_its_second_trial, storage=storage, study_name="r", worker=0)
    stuck = optuna.load_study(study_name="r", storage=storage).trials[1]
    assert (stuck.state.name, stuck.user_attrs) == ("RUNNING", {"worker": 0})

    def records(worker: int) -> Callable[[optuna.Trial], float]:
        def objective(trial: optuna.Trial) -> float:
            seen.append((worker, trial.number))
            return trial.suggest_float("x", 0.0, 1.0)

        return objective

    # Another worker leaves it alone (it is worker 0's) and draws the rest of the budget...
    assert hpo.work(records(1), storage=storage, study_name="r", worker=1) == 3
    # ...and the retried worker 0 takes it back: the count ends at exactly the planned 5.
    assert hpo.work(records(0), storage=storage, study_name="r", worker=0) == 1
    assert seen == [(0, 0), (0, 1), (1, 2), (1, 3), (1, 4), (0, 1)]
    trials = optuna.load_study(study_name="r", storage=storage).trials
    assert [(t.number, t.state, t.user_attrs["worker"]) for t in trials] == [
        (0, COMPLETE, 0),
        (1, COMPLETE, 0),
        (2, COMPLETE, 1),
        (3, COMPLETE, 1),
        (4, COMPLETE, 1),
    ]


def test_pruned_and_failed_trials_count_and_an_unexpected_error_stops_the_worker(tmp_path: Path) -> None:
    storage = f"journal:{tmp_path / 'j.log'}"
    hpo.plan_study(n_trials=4, storage=storage, study_name="s")
    outcomes: list[Callable[[], float]] = [
        lambda: 0.7,
        lambda: (_ for _ in ()).throw(optuna.TrialPruned()),
        lambda: (_ for _ in ()).throw(ValueError("diverged")),  # caught, as optimize's catch=(ValueError,)
        lambda: (_ for _ in ()).throw(RuntimeError("bug")),
    ]
    with pytest.raises(RuntimeError, match="bug"):
        hpo.work(lambda t: outcomes[t.number](), storage=storage, study_name="s", worker=0)
    trials = optuna.load_study(study_name="s", storage=hpo.storage_from_uri(storage)).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED", "FAIL", "FAIL"]
    assert hpo.load(storage=storage, study_name="s").best_value == 0.7


def test_a_worker_past_its_time_budget_takes_no_new_trial(tmp_path: Path) -> None:
    storage = f"journal:{tmp_path / 'j.log'}"
    hpo.plan_study(n_trials=3, storage=storage, study_name="t")
    ticks = iter(range(0, 1000, 10))
    ran = hpo.work(lambda t: 0.5, storage=storage, study_name="t", worker=0, timeout_s=15, clock=lambda: next(ticks))
    assert ran == 1  # deadline 15: the check at 10 takes a trial, the one at 20 does not
    states = [t.state.name for t in optuna.load_study(study_name="t", storage=hpo.storage_from_uri(storage)).trials]
    assert states == ["COMPLETE"]


def test_callbacks_see_each_finished_trial(tmp_path: Path) -> None:
    storage = f"journal:{tmp_path / 'j.log'}"
    hpo.plan_study(n_trials=2, storage=storage, study_name="c")
    seen: list[tuple[int, str, dict[str, Any]]] = []
    hpo.work(
        lambda t: 0.5,
        storage=storage,
        study_name="c",
        worker=3,
        callbacks=[lambda s, t: seen.append((t.number, t.state.name, t.user_attrs))],
    )
    assert seen == [(0, "COMPLETE", {"worker": 3}), (1, "COMPLETE", {"worker": 3})]


def test_refusals(tmp_path: Path) -> None:
    for memory in ("", "memory"):
        with pytest.raises(InvalidInputError) as caught:
            hpo.plan_study(n_trials=2, storage=memory, study_name="m")
        assert caught.value.message == (
            "HPO workers need a storage they all reach (a journal file, SQLite or an RDB URL), not memory"
        )
    storage = f"journal:{tmp_path / 'j.log'}"
    with pytest.raises(InvalidInputError, match=r"^n_trials must be at least 1, got 0$"):
        hpo.plan_study(n_trials=0, storage=storage, study_name="m")
    with pytest.raises(NotFoundError) as missing:
        hpo.work(lambda t: 0.5, storage=storage, study_name="nope", worker=0)
    assert missing.value.message == f"HPO study 'nope' not found in '{storage}': run the plan step first"
    with pytest.raises(NotFoundError, match=r"^HPO study 'nope' not found in "):
        hpo.load(storage=storage, study_name="nope")
    optuna.create_study(study_name="unplanned", storage=hpo.storage_from_uri(storage))
    with pytest.raises(InvalidInputError, match=r"^HPO study 'unplanned' has no trial budget: run the plan step"):
        hpo.work(lambda t: 0.5, storage=storage, study_name="unplanned", worker=0)
    hpo.plan_study(n_trials=1, storage=storage, study_name="m")
    with pytest.raises(InvalidInputError, match=r"^worker index must be at least 0, got -1$"):
        hpo.work(lambda t: 0.5, storage=storage, study_name="m", worker=-1)

    def pruned(trial: optuna.Trial) -> float:
        raise optuna.TrialPruned

    hpo.work(pruned, storage=storage, study_name="m", worker=0)
    with pytest.raises(InvalidInputError, match=r"^HPO finished no trial in study 'm' \(all pruned or failed\)$"):
        hpo.load(storage=storage, study_name="m")
