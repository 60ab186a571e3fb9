"""The in-cluster stage runner with real fits, reporting to an in-memory status."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from kubetune.api import TuningJobSpec
from kubetune.api.status import TuningJobStatus
from kubetune.planning import ObjectRef, StageTask, plan_stage, resolve_space
from kubetune.runner import stage as runner

pytestmark = pytest.mark.runner

RUNNER_FIELDS = {"trials", "progress", "best", "topTrials", "report", "reproducibility"}


class MemoryStatus:
    """Stands in for the API: merge patches applied to one status, each one kept."""

    def __init__(self, status: dict[str, Any] | None = None) -> None:
        self.status: dict[str, Any] = status or {}
        self.patches: list[dict[str, Any]] = []

    def get(self) -> dict[str, Any]:
        return {"metadata": {"name": "job", "uid": "u"}, "status": copy.deepcopy(self.status)}

    def patch(self, status: dict[str, Any]) -> None:
        self.patches.append(copy.deepcopy(status))
        _merge(self.status, status)


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


SPEC = TuningJobSpec.model_validate(
    {
        "estimator": {"name": "LogisticRegression"},
        "preprocessing": [{"name": "StandardScaler"}],
        "dataset": {"builtin": "iris"},
        "parameters": [{"name": "C", "float": {"low": 0.001, "high": 100.0, "log": True}}],
        "search": {
            "seed": 3,
            "stages": [{"method": "random", "trials": 6}, {"method": "bayesian", "trials": 4}],
        },
        "cv": {"folds": 3},
    }
)


def _task(index: int = 0, spec: TuningJobSpec = SPEC, offset: int = 0) -> StageTask:
    space = resolve_space(estimator=spec.estimator, parameters=spec.parameters)
    plan = plan_stage(search=spec.search, index=index, space=space, seed=3, trial_offset=offset)
    return StageTask(
        target=ObjectRef(namespace="ns", name="job", uid="u"),
        spec=spec,
        plan=plan,
        planned_total=10,
    )


def test_a_stage_reports_progress_and_its_result_in_runner_fields_only() -> None:
    memory = MemoryStatus({"phase": "Running", "reproducibility": {"seed": 3}})
    assert runner.run_task(_task(), writer=memory) == runner.EXIT_OK  # type: ignore[arg-type]
    assert all(set(p) <= RUNNER_FIELDS for p in memory.patches)
    assert len(memory.patches) >= 2
    status = TuningJobStatus.model_validate(memory.status)
    assert status.phase == "Running"  # the operator's field is untouched
    assert status.reproducibility is not None and status.reproducibility.seed == 3
    assert status.reproducibility.dataset is not None
    assert status.reproducibility.dataset.rows == 150
    report = status.report
    assert report is not None and report.stage == "s1-random" and report.phase == "Succeeded"
    assert report.trials.completed == 6 and len(report.top) == 5  # refinement.topK
    assert status.trials.completed == 6 and status.progress == "6/10"
    assert status.best is not None and status.best.score == report.best_score
    assert [t.trial for t in status.top_trials][:1] == [status.best.trial]
    # running reports came first, the final one last
    assert memory.patches[0]["report"]["phase"] == "Running"
    assert memory.patches[-1]["report"]["phase"] == "Succeeded"


def test_the_next_stage_keeps_the_earlier_best_and_counts() -> None:
    memory = MemoryStatus({"reproducibility": {"seed": 3}})
    runner.run_task(_task(), writer=memory)  # type: ignore[arg-type]
    first_best = memory.status["best"]
    task = _task(index=1, offset=6).model_copy(
        update={"trials_before": TuningJobStatus.model_validate(memory.status).trials}
    )
    assert runner.run_task(task, writer=memory) == runner.EXIT_OK  # type: ignore[arg-type]
    status = TuningJobStatus.model_validate(memory.status)
    assert status.trials.completed == 10 and status.progress == "10/10"
    assert status.report is not None and status.report.stage == "s2-bayesian"
    assert status.best is not None and status.best.score >= first_best["score"]
    assert {t.stage for t in status.top_trials} <= {"s1-random", "s2-bayesian"}
    numbers = [t.trial for t in status.top_trials]
    assert len(numbers) == len(set(numbers)) and max(numbers) <= 9


def test_bad_input_exits_2_with_one_line_in_the_termination_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "termination-log"
    monkeypatch.setattr(runner, "TERMINATION_LOG", str(log))
    spec = SPEC.model_copy(
        update={
            "dataset": SPEC.dataset.model_validate(
                {"file": {"path": "/no/such/train.csv", "target": "y"}}
            )
        }
    )
    memory = MemoryStatus()
    assert runner.run_task(_task(spec=spec), writer=memory) == 2  # type: ignore[arg-type]
    (line,) = log.read_text().splitlines()
    assert "spec.dataset.file.path" in line and "/no/such/train.csv" in line
    assert memory.status["report"]["phase"] == "Failed"


def test_a_failed_stage_exits_2_with_the_grouped_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "termination-log"
    monkeypatch.setattr(runner, "TERMINATION_LOG", str(log))
    spec = TuningJobSpec.model_validate(
        {
            "estimator": {"name": "KNeighborsClassifier"},
            "dataset": {"builtin": "iris"},
            "parameters": [{"name": "n_neighbors", "categorical": [400, 500]}],
            "search": {"method": "grid", "seed": 0},
            "cv": {"folds": 3},
        }
    )
    memory = MemoryStatus()
    assert runner.run_task(_task(spec=spec), writer=memory) == 2  # type: ignore[arg-type]
    assert "all 2 trials failed" in log.read_text()
    assert memory.status["report"]["phase"] == "Failed"
    assert "n_neighbors" in memory.status["report"]["message"]


def test_main_rejects_a_missing_or_broken_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "termination-log"
    monkeypatch.setattr(runner, "TERMINATION_LOG", str(log))
    monkeypatch.delenv(runner.TASK_ENV, raising=False)
    assert runner.main() == 2
    assert "KUBETUNE_TASK is not set" in log.read_text()
    monkeypatch.setenv(runner.TASK_ENV, json.dumps({"plan": {}}))
    assert runner.main() == 2
    assert "not a valid stage task" in log.read_text()


def test_the_ledger_keeps_the_full_table_of_every_stage() -> None:
    from kubetune.ledger import MemoryStore
    from kubetune.trials import ledger_records

    memory, store = MemoryStatus({"reproducibility": {"seed": 3}}), MemoryStore()
    assert runner.run_task(_task(), writer=memory, ledger=store) == 0  # type: ignore[arg-type]
    before = TuningJobStatus.model_validate(memory.status).trials
    task = _task(index=1, offset=6).model_copy(update={"trials_before": before})
    assert runner.run_task(task, writer=memory, ledger=store) == 0  # type: ignore[arg-type]
    records = ledger_records(store=store, tuningjob="job", spec=SPEC)
    assert [r.number for r in records] == list(range(10))
    assert [r.stage for r in records] == ["s1-random"] * 6 + ["s2-bayesian"] * 4
    assert all(len(r.folds) == 3 and r.ok for r in records)
    best = TuningJobStatus.model_validate(memory.status).best
    assert best is not None
    assert records[best.trial].fold_scores("accuracy") == best.fold_scores
    assert set(store.maps) == {"job-ledger-0"}


def test_an_api_error_reaches_the_termination_log_without_its_headers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubernetes.client.exceptions import ApiException

    log = tmp_path / "termination-log"
    monkeypatch.setattr(runner, "TERMINATION_LOG", str(log))
    monkeypatch.setenv(runner.TASK_ENV, _task().model_dump_json())
    monkeypatch.setattr(runner, "api_client", lambda: None)

    def forbidden(*args: Any, **kwargs: Any) -> int:
        error = ApiException(status=403, reason="Forbidden")
        error.headers = {"Audit-Id": "a1b2", "Content-Type": "application/json"}
        error.body = json.dumps(
            {"kind": "Status", "message": 'configmaps is forbidden: User "x" cannot create'}
        )
        raise error

    monkeypatch.setattr(runner, "run_task", forbidden)
    assert runner.main() == runner.EXIT_INTERNAL
    (line,) = log.read_text().splitlines()
    assert line == (
        "internal error in the runner: Kubernetes API 403 Forbidden: "
        'configmaps is forbidden: User "x" cannot create'
    )


_SVC = {"estimator": {"name": "SVC"}, "preprocessing": [{"name": "PCA"}]}


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        (None, (1, [])),
        ("not json", (1, [])),
        (json.dumps({"plan": {"parallelism": 2}}), (2, [])),
        (
            json.dumps({"plan": {"parallelism": 2}, "spec": _SVC}),
            (2, ["sklearn.decomposition", "sklearn.svm"]),
        ),
        (json.dumps({"plan": {"parallelism": "2"}, "spec": _SVC}), (1, [])),
        (json.dumps({"plan": {"parallelism": 0}}), (1, [])),
        (json.dumps({"plan": None}), (1, [])),
        (json.dumps([1, 2]), (1, [])),
    ],
)
def test_the_job_command_reads_the_parallelism_and_models_before_validation(
    monkeypatch: pytest.MonkeyPatch, task: str | None, expected: tuple[int, list[str]]
) -> None:
    from kubetune.runner import __main__ as command

    if task is None:
        monkeypatch.delenv(runner.TASK_ENV, raising=False)
    else:
        monkeypatch.setenv(runner.TASK_ENV, task)
    assert command.declared_task() == expected


def test_the_job_command_starts_the_workers_before_importing_the_stage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    import kubetune.runner
    from kubetune.runner import __main__ as command

    # As in a fresh pod: the stage code (the engine, the Kubernetes client) not yet imported.
    monkeypatch.delitem(sys.modules, "kubetune.runner.stage")
    monkeypatch.delattr(kubetune.runner, "stage")
    started: list[tuple[int, list[str], bool]] = []
    monkeypatch.setattr(
        command,
        "warm_up",
        lambda workers, modules: started.append(
            (workers, modules, "kubetune.runner.stage" in sys.modules)
        ),
    )
    monkeypatch.setenv(runner.TASK_ENV, json.dumps({"plan": {"parallelism": 2}, "spec": _SVC}))
    assert command.run() == runner.EXIT_NO_RETRY  # not a valid task: the stage says so
    assert started == [(2, ["sklearn.decomposition", "sklearn.svm"], False)]
    assert "kubetune.runner.stage" in sys.modules
