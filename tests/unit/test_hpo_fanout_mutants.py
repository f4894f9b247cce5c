"""HPO workers sharing one study (plan_study, work, load): behaviour the mutation run (issue 12) found unasserted.

In-process, on journal or SQLite files under tmp_path; a race between workers is forced, not hoped for.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

from hybridml.core import hpo

pytestmark = pytest.mark.unit


def _journal(tmp_path: Path) -> str:
    return f"journal:{tmp_path / 'j.log'}"


def _recording(numbers: list[int], value: float) -> Callable[[optuna.Trial], float]:
    """An objective that records each trial's number and returns ``value``."""

    def objective(trial: optuna.Trial) -> float:
        numbers.append(trial.number)
        return value

    return objective


def _trials(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=hpo.storage_from_uri(storage)).trials


def test_a_trial_drawn_past_the_budget_by_a_race_is_put_back_waiting_and_never_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Trial 0 is finished; then another worker draws trial 1 between worker 1's count (1 of 2 taken) and its ask,
    # so worker 1 draws number 2, exactly the budget.
    storage = _journal(tmp_path)
    hpo.plan_study(n_trials=2, storage=storage, study_name="race")
    other = optuna.load_study(study_name="race", storage=hpo.storage_from_uri(storage))
    other.tell(other.ask(), 0.1)  # trial 0, finished
    real_ask = optuna.Study.ask
    raced: list[int] = []

    def ask_after_another_worker(self: optuna.Study, *args: Any, **kwargs: Any) -> optuna.Trial:
        if not raced:
            raced.append(real_ask(other).number)  # the other worker's draw: trial 1, left running
        return real_ask(self, *args, **kwargs)

    monkeypatch.setattr(optuna.Study, "ask", ask_after_another_worker)
    ran: list[int] = []
    assert hpo.work(_recording(ran, 0.5), storage=storage, study_name="race", worker=1) == 0
    assert (raced, ran) == ([1], [])
    trials = _trials(storage, "race")
    assert [(t.number, t.state.name, t.user_attrs) for t in trials] == [
        (0, "COMPLETE", {}),
        (1, "RUNNING", {}),
        (2, "WAITING", {}),
    ]
    monkeypatch.setattr(optuna.Study, "ask", real_ask)
    # The put-back trial is never handed out again: the budget is taken, any worker stops at once.
    assert hpo.work(lambda t: 0.5, storage=storage, study_name="race", worker=2) == 0
    assert [t.state.name for t in _trials(storage, "race")] == ["COMPLETE", "RUNNING", "WAITING"]


def test_each_worker_samples_with_the_seed_plus_its_index(tmp_path: Path) -> None:
    def first_draw(seed: int) -> float:
        reference = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
        return float(reference.ask().suggest_float("x", 0.0, 1.0))

    for worker in (0, 3):
        storage = f"journal:{tmp_path / f'w{worker}.log'}"
        hpo.plan_study(n_trials=1, storage=storage, study_name="s", seed=99)  # the plan's seed does not sample
        hpo.work(lambda t: t.suggest_float("x", 0.0, 1.0), storage=storage, study_name="s", worker=worker, seed=5)
        assert _trials(storage, "s")[0].params["x"] == first_draw(5 + worker)
    assert first_draw(5) != first_draw(8)


def test_a_worker_resumes_only_its_own_running_trial_and_records_its_index(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    hpo.plan_study(n_trials=3, storage=storage, study_name="r")
    left = optuna.load_study(study_name="r", storage=storage)
    for worker in (4, 6):  # two dead attempts left a trial RUNNING each
        left.ask().set_user_attr(hpo.WORKER_ATTR, worker)
    seen: list[int] = []
    assert hpo.work(_recording(seen, 0.5), storage=storage, study_name="r", worker=6) == 2
    # Worker 6 finishes its own trial 1 first, then draws the last of the budget; worker 4's trial stays running.
    assert seen == [1, 2]
    assert [(t.number, t.state.name, t.user_attrs) for t in _trials(storage, "r")] == [
        (0, "RUNNING", {"worker": 4}),
        (1, "COMPLETE", {"worker": 6}),
        (2, "COMPLETE", {"worker": 6}),
    ]
    assert hpo.work(_recording(seen, 0.7), storage=storage, study_name="r", worker=4) == 1
    assert seen == [1, 2, 0]
    assert hpo.load(storage=storage, study_name="r").best_trial.number == 0


def test_the_budget_is_a_study_attribute_and_the_plan_maximises(tmp_path: Path) -> None:
    storage = _journal(tmp_path)
    study = hpo.plan_study(n_trials=4, storage=storage, study_name="b", seed=3)
    assert (hpo.BUDGET_ATTR, hpo.WORKER_ATTR) == ("n_trials", "worker")
    assert (study.study_name, study.direction, study.user_attrs) == (
        "b",
        optuna.study.StudyDirection.MAXIMIZE,
        {"n_trials": 4},
    )
    assert hpo.plan_study(n_trials=1, storage=storage, study_name="b").user_attrs == {"n_trials": 1}
    assert hpo.work(lambda t: float(t.number), storage=storage, study_name="b", worker=0) == 1
    loaded = hpo.load(storage=storage, study_name="b")
    assert (loaded.study_name, loaded.direction, len(loaded.trials)) == ("b", optuna.study.StudyDirection.MAXIMIZE, 1)


def test_no_time_limit_unless_positive(tmp_path: Path) -> None:
    for timeout_s in (None, 0.0, -5.0):
        storage = f"journal:{tmp_path / f'{timeout_s}.log'}"
        hpo.plan_study(n_trials=2, storage=storage, study_name="t")
        ticks = iter([0.0, 1e12, 2e12, 3e12, 4e12])  # a clock that races ahead: without a deadline it does not matter
        ran = hpo.work(
            lambda t: 0.5, storage=storage, study_name="t", worker=0, timeout_s=timeout_s, clock=ticks.__next__
        )
        assert ran == 2


def test_the_default_seed_is_zero(tmp_path: Path) -> None:
    storage = _journal(tmp_path)
    hpo.plan_study(n_trials=1, storage=storage, study_name="d")
    hpo.work(lambda t: t.suggest_float("x", 0.0, 1.0), storage=storage, study_name="d", worker=0)
    reference = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    assert _trials(storage, "d")[0].params["x"] == reference.ask().suggest_float("x", 0.0, 1.0)


@pytest.mark.parametrize(
    ("timeout_s", "ticks", "ran"),
    [
        (0.5, [0.0, 0.25, 1.0], 1),  # a budget under a second is still a budget
        (10.0, [0.0, 10.0], 0),  # a deadline exactly reached takes no new trial
        (10.0, [0.0, 9.0, 10.0], 1),
    ],
)
def test_a_time_budget_is_honoured_to_its_boundary(
    tmp_path: Path, timeout_s: float, ticks: list[float], ran: int
) -> None:
    storage = _journal(tmp_path)
    hpo.plan_study(n_trials=5, storage=storage, study_name="t")
    clock = iter(ticks).__next__
    assert hpo.work(lambda t: 0.5, storage=storage, study_name="t", worker=0, timeout_s=timeout_s, clock=clock) == ran
    assert len(_trials(storage, "t")) == ran


def test_callbacks_receive_the_shared_study(tmp_path: Path) -> None:
    storage = _journal(tmp_path)
    hpo.plan_study(n_trials=2, storage=storage, study_name="c")
    seen: list[tuple[str, int, int]] = []
    hpo.work(
        lambda t: 0.5,
        storage=storage,
        study_name="c",
        worker=1,
        callbacks=[lambda s, t: seen.append((s.study_name, len(s.trials), t.number))],
    )
    assert seen == [("c", 1, 0), ("c", 2, 1)]
