"""One stage of a TuningJob inside its Job's pod (started by ``python -m kubetune.runner``).

The frozen task (``KUBETUNE_TASK``, set by the operator) says which stage, over which space,
for which resource. The stage runs on the same engine as `kubetune run`, and its progress goes
into the resource's status at most about once a second and on every improvement.

Exit codes: 0 the stage succeeded; 2 bad input or a failed stage (retrying will not help: the
Job's pod failure policy fails it at once); 3 anything else (the Job may retry). On failure one
readable line goes to the termination log, which the operator shows in status.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import optuna

from kubetune.api import SpecError, TuningJob
from kubetune.api.status import (
    TOP_TRIALS,
    BestTrial,
    StageReport,
    StageStatus,
    TrialCounts,
    TuningJobStatus,
    now,
)
from kubetune.cluster import KubeConfigMaps, ResourceGone, StatusWriter, api_client, describe
from kubetune.engine import JobRun, Prepared, drive, open_executor, prepare
from kubetune.ledger import ConfigMapJournal, ConfigMapStore, LedgerFull
from kubetune.planning import StageTask
from kubetune.results import TrialRecord, best_trial, failure_groups, ranked, summary
from kubetune.runner import TASK_ENV
from kubetune.trials import ledger_prefix

EXIT_OK, EXIT_NO_RETRY, EXIT_INTERNAL = 0, 2, 3
TERMINATION_LOG = os.environ.get("KUBETUNE_TERMINATION_LOG", "/dev/termination-log")
MIN_INTERVAL = 1.0


def last_words(message: str) -> None:
    """One readable line for `kubectl describe` and the operator (the termination message)."""
    line = " ".join(message.split())[:1000]
    print(f"error: {line}", file=sys.stderr, flush=True)
    with contextlib.suppress(OSError):  # outside a pod there may be no termination log
        Path(TERMINATION_LOG).write_text(line + "\n")


class StatusReporter:
    """Turns the stage's trials into merge patches of the runner-owned status fields."""

    def __init__(
        self,
        *,
        writer: StatusWriter,
        task: StageTask,
        previous: TuningJobStatus,
        prepared: Prepared,
        min_interval: float = MIN_INTERVAL,
    ) -> None:
        self.writer, self.task, self.previous, self.prepared = writer, task, previous, prepared
        self.min_interval = min_interval
        self._written = 0.0
        self._best: float | None = None
        self.writes = 0

    def trial(self, run: JobRun, record: TrialRecord) -> None:
        best = run.best_record()
        improved = best is not None and (self._best is None or best.mean(run.metric) > self._best)
        if improved or time.monotonic() - self._written >= self.min_interval:
            self.write(run)

    def stage(self, run: JobRun, stage: StageStatus) -> None:
        self.write(run, final=True)

    def write(self, run: JobRun, *, final: bool = False) -> None:
        self.writer.patch(self.status(run, final=final))
        self._written = time.monotonic()
        best = run.best_record()
        self._best = best.mean(run.metric) if best else None
        self.writes += 1

    def status(self, run: JobRun, *, final: bool) -> dict[str, Any]:
        plan, before = self.task.plan, self.task.trials_before
        records = run.records
        completed = sum(r.ok for r in records)
        failed = len(records) - completed
        top = ranked(records, run.metric)
        # Earlier stages' best trials, without this stage's (a restarted pod reports again).
        earlier = [t for t in self.previous.top_trials if t.stage != plan.name]
        merged = sorted(
            [*earlier, *(summary(r, run.metric) for r in top)], key=lambda t: (-t.score, t.trial)
        )[:TOP_TRIALS]
        best: BestTrial | None = self.previous.best
        if best is not None and best.stage == plan.name:
            best = None
        if top and (best is None or top[0].mean(run.metric) > best.score):
            best = best_trial(
                top[0],
                metric=run.metric,
                additional=run.metrics[1:],
                test_train_ratio=run.test_train_ratio,
            )
        search = run.search
        planned = search.planned if search else 0
        phase = run.phase if final else "Running"
        report = StageReport(
            stage=plan.name,
            phase=phase,
            trials=TrialCounts(completed=completed, failed=failed, planned=planned),
            best_score=top[0].mean(run.metric) if top else None,
            top=[summary(r, run.metric) for r in top[: self.task.spec.search.refinement.top_k]],
            failures=failure_groups(records),
            message=run.message if phase == "Failed" else None,
            updated_at=now(),
        )
        done = before.completed + before.failed + len(records)
        repro = self.prepared.reproducibility
        status: dict[str, Any] = {
            "trials": {
                "completed": before.completed + completed,
                "failed": before.failed + failed,
                "planned": self.task.planned_total,
            },
            "progress": f"{done}/{max(done, self.task.planned_total)}",
            "topTrials": [t.to_dict() for t in merged],
            "report": report.to_dict(),
            # The seed is the operator's; the runner adds what it learnt from the data.
            "reproducibility": {k: v for k, v in repro.to_dict().items() if k != "seed"},
        }
        if best is not None:
            status["best"] = best.to_dict()
        return status


def main() -> int:
    raw = os.environ.get(TASK_ENV)
    if not raw:
        last_words(f"{TASK_ENV} is not set: this command runs inside a stage Job")
        return EXIT_NO_RETRY
    try:
        task = StageTask.model_validate_json(raw)
    except ValueError as error:
        last_words(f"{TASK_ENV} is not a valid stage task: {str(error).splitlines()[0]}")
        return EXIT_NO_RETRY
    api = api_client()
    try:
        return run_task(
            task,
            writer=StatusWriter(target=task.target, api=api),
            ledger=KubeConfigMaps(api=api, owner=task.target),
        )
    except ResourceGone as error:
        last_words(f"stopped: {error}")
        return EXIT_NO_RETRY
    except LedgerFull as error:
        last_words(str(error))
        return EXIT_NO_RETRY
    except Exception as error:  # the pod's last guard: one line, then a retry by the Job
        last_words(f"internal error in the runner: {describe(error)}")
        return EXIT_INTERNAL


def run_task(
    task: StageTask,
    *,
    writer: StatusWriter,
    ledger: ConfigMapStore | None = None,
    parallelism: int | None = None,
) -> int:
    """Run the task's stage and report it through ``writer``; returns the exit code.

    With a ``ledger`` store the stage's trials are journaled there as they finish, and a stage
    found there already (its pod was killed) resumes without running a finished trial again.
    """
    target = task.target
    job = TuningJob.model_validate(
        {
            "metadata": {"name": target.name, "namespace": target.namespace},
            "spec": task.spec.to_dict(),
        }
    )
    plan = task.plan
    try:
        prepared = prepare(job)
    except SpecError as error:
        message = "; ".join(error.problems)
        writer.patch(
            {
                "report": StageReport(
                    stage=plan.name, phase="Failed", message=message, updated_at=now()
                ).to_dict()
            }
        )
        last_words(message)
        return EXIT_NO_RETRY
    body = writer.get()
    try:
        previous = TuningJobStatus.model_validate(body.get("status") or {})
    except ValueError:
        previous = TuningJobStatus()
    warm = [(t.params, t.score) for t in previous.top_trials if t.stage != plan.name]
    workers = parallelism or plan.parallelism
    with open_executor(prepared, workers=workers) as executor:
        journal = (
            ConfigMapJournal(store=ledger, prefix=ledger_prefix(target.name)) if ledger else None
        )
        run = JobRun(
            name=target.name,
            spec=task.spec,
            prepared=prepared,
            test_train_ratio=executor.test_train_ratio,
            only=plan,
            warm_start=warm,
            storage=optuna.storages.JournalStorage(journal) if journal else None,
            after_tell=journal.flush if journal else None,
        )
        reporter = StatusReporter(writer=writer, task=task, previous=previous, prepared=prepared)
        drive([run], executor, reporter=reporter)
    if run.phase != "Succeeded":
        last_words(run.message or f"stage {plan.name} failed")
        return EXIT_NO_RETRY
    best = run.best_record()
    score = "-" if best is None else f"{best.mean(run.metric):.4f}"
    print(f"{plan.name}: {run.counts().completed} trials, best {run.metric} {score}", flush=True)
    return EXIT_OK
