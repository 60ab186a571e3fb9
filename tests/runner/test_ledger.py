"""The trial ledger: resume without repeats, and a bounded, append-only journal."""

from __future__ import annotations

import contextlib
from typing import Any

import optuna
import pytest
from tests.conftest import tuning_job

from kubetune.api import TuningJob
from kubetune.engine import JobRun, drive, prepare
from kubetune.executor import Executor
from kubetune.ledger import ConfigMapJournal, LedgerFull, MemoryStore
from kubetune.planning import plan_stage, resolve_space

SPEC: dict[str, Any] = {
    "estimator": {"name": "LogisticRegression"},
    "dataset": {"builtin": "iris"},
    "parameters": [
        {"name": "C", "float": {"low": 0.001, "high": 100.0, "log": True}},
        {"name": "fit_intercept", "categorical": [True, False]},
    ],
    "search": {"seed": 11, "method": "random", "trials": 8, "parallelism": 2},
    "cv": {"folds": 3},
}


class Killed(Exception):
    pass


class Counter:
    """Counts evaluated trials; 'kills the pod' after ``kill_after`` of them."""

    def __init__(self, kill_after: int | None = None) -> None:
        self.kill_after, self.seen = kill_after, []

    def trial(self, run: JobRun, record: Any) -> None:
        self.seen.append(record.number)
        if self.kill_after is not None and len(self.seen) >= self.kill_after:
            raise Killed

    def stage(self, run: JobRun, stage: Any) -> None:
        pass


def _stage(store: MemoryStore | None, reporter: Counter, job: TuningJob) -> JobRun:
    prepared = prepare(job)
    space = resolve_space(estimator=job.spec.estimator, parameters=job.spec.parameters)
    plan = plan_stage(search=job.spec.search, index=0, space=space, seed=prepared.seed)
    journal = ConfigMapJournal(store=store, prefix="job-ledger") if store else None
    storage = optuna.storages.JournalStorage(journal) if journal else None
    with Executor(
        X=prepared.data.X,
        y=prepared.data.y,
        splits=prepared.splits,
        workers=job.spec.search.parallelism,
    ) as executor:
        run = JobRun(
            name="job",
            spec=job.spec,
            prepared=prepared,
            only=plan,
            test_train_ratio=executor.test_train_ratio,
            storage=storage,
            after_tell=journal.flush if journal else None,
        )
        with contextlib.suppress(Killed):  # the pod dies mid-stage
            drive([run], executor, reporter=reporter)
    return run


@pytest.mark.runner
@pytest.mark.parametrize("method", ["random", "grid", "bayesian"])
def test_a_killed_stage_resumes_without_repeating_a_finished_trial(method: str) -> None:
    search = {**SPEC["search"], "method": method}
    if method == "grid":
        search.pop("trials")
    job = tuning_job({**SPEC, "search": search})
    store = MemoryStore()
    first = Counter(kill_after=3)
    _stage(store, first, job)
    finished = {r.number for r in _stage_records(store, job)}
    assert len(finished) >= 3
    second = Counter()
    resumed = _stage(store, second, job)
    assert resumed.phase == "Succeeded"
    assert not finished & set(second.seen), "a finished trial ran again"
    numbers = [r.number for r in resumed.records]
    assert numbers == list(range(len(numbers)))
    assert len(numbers) == resumed.search.planned  # type: ignore[union-attr]
    if method != "bayesian":
        # grid and random trials do not depend on timing: the same as an uninterrupted stage
        straight = _stage(None, Counter(), job)
        assert [r.params for r in resumed.records] == [r.params for r in straight.records]


def _stage_records(store: MemoryStore, job: TuningJob) -> list[Any]:
    storage = optuna.storages.JournalStorage(ConfigMapJournal(store=store, prefix="job-ledger"))
    study = optuna.load_study(study_name="s1-" + job.spec.search.method, storage=storage)
    return [t for t in study.trials if t.state.is_finished()]


@pytest.mark.unit
def test_journal_appends_one_key_per_flush_and_reloads_in_order() -> None:
    store = MemoryStore()
    journal = ConfigMapJournal(store=store, prefix="p")
    journal.append_logs([{"op": 1}, {"op": 2}])
    journal.flush()
    journal.append_logs([{"op": 3}])
    journal.flush()
    journal.flush()  # nothing pending: no write
    assert journal.writes == 2
    assert sorted(store.maps["p-0"]) == ["0000000000", "0000000002"]
    again = ConfigMapJournal(store=store, prefix="p")
    assert list(again.read_logs(0)) == [{"op": 1}, {"op": 2}, {"op": 3}]
    assert list(again.read_logs(2)) == [{"op": 3}]


@pytest.mark.unit
def test_journal_starts_a_new_configmap_when_one_is_full_and_fails_clearly_at_capacity() -> None:
    store = MemoryStore()
    journal = ConfigMapJournal(store=store, prefix="p", chunk_bytes=200, max_chunks=2)
    for i in range(4):
        journal.append_logs([{"trial": i, "pad": "x" * 60}])
        journal.flush()
    assert set(store.maps) == {"p-0", "p-1"}
    assert all(sum(len(k) + len(v) for k, v in m.items()) <= 200 for m in store.maps.values())
    reloaded = ConfigMapJournal(store=store, prefix="p", chunk_bytes=200, max_chunks=2)
    assert [log["trial"] for log in reloaded.read_logs(0)] == [0, 1, 2, 3]
    journal.append_logs([{"trial": 4, "pad": "x" * 60}])  # both ConfigMaps are full now
    with pytest.raises(LedgerFull, match="the trial ledger is full"):
        journal.flush()
