"""The operator at scale (issue 7, item 5): 1,000 TuningJobs created at once.

The cluster simulation without its slow part: the mock Kubernetes API of the operator tests
(``tests/operator/harness.py``, :class:`MockApiServer`, served from a thread of this process),
the real operator as its own OS process (``python -m kubetune_operator`` with a kubeconfig
pointing at the mock, as ``tests/operator/test_process.py`` runs it, with its production
defaults: 30 s resync, metrics on a port), and :class:`InstantJobs`, a test-side stand-in for
the Job controller *and* the runner pod that finishes every stage Job the moment it appears,
instead of running ``python -m kubetune.runner`` as ``tests/cluster/jobsim.py`` does.

What :class:`InstantJobs` writes is what the operator reads (``planner.plan_tuning``): a stage
is over when its Job has the ``Complete`` condition *and* ``status.report`` of the TuningJob
names that stage with a terminal phase. So, for each new stage Job, in the order a real pod
would produce them: (1) the runner's reads and its final write (``kubetune/runner/stage.py``:
``run_task`` GETs the TuningJob, then ``StatusReporter.status(final=True)`` merge-patches
``trials``, ``progress``, ``topTrials``, ``report``, ``reproducibility`` without the seed, and
``best``), with trials made up from the Job's frozen task (grid points of the stage's space,
made-up scores); (2) the Job controller's status as ``jobsim.py`` writes it for a pod that
exited 0 (``succeeded: 1``, ``startTime``, ``completionTime``, ``SuccessCriteriaMet`` and
``Complete`` conditions). A real runner also writes progress while its trials run, and the
Job controller writes ``active: 1`` first: with instant Jobs neither happens.

The spec is the two-stage progressive search of the operator tests (SVC on iris, 3 folds:
``s1-grid`` with 6 trials, then ``s2-random`` with 3), so that "past the first stage" is a
real transition: the operator has seen stage 1's Job complete with its report, written stage 1
``Succeeded``, and started stage 2 (status first, then the Job). That moment is taken from the
mock's request log (the operator's status patch that marks stage 1 Succeeded). Stage 2's Jobs
are completed too, so every resource should end ``Succeeded``; that time is reported as well.

Figures: peak memory of the operator process and its descendants (RSS and PSS from
``/proc/PID/status`` and ``/proc/PID/smaps_rollup``, sampled every 50 ms, plus the kernel's
``VmHWM``), the time from the first create until every TuningJob is past its first stage,
reconcile latency p50/p99 two ways (one pass of the handler, from the operator's own
``kubetune_reconcile_duration_seconds`` histogram scraped from its metrics port, interpolated
within buckets as Prometheus' ``histogram_quantile`` does; and what a user feels: create to
stage-1 Job, stage-1 Job complete to stage 1 Succeeded, from the mock's request log), lost
resources, duplicate Jobs (Jobs per TuningJob and stage in the mock, and the operator's Job
creates answered 409), and CPU seconds of the operator and of the mock API's thread (to tell
which of them is the bottleneck).

    python bench/operator_scale.py [--resources 1000] [--timeout 300] [--markdown FILE]
    python bench/operator_scale.py --rate 20     # a diagnosis: 20 creates per second

``--rate`` spreads the creates out: the difference in peak memory is what a burst costs (kopf
keeps one busy worker per object with an event in flight).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' mock API, reused
from tests.operator.actors import task_of
from tests.operator.harness import JOBS, TUNINGJOBS, ApiClient, ApiError, MockApiServer, wait_for

from _tables import Report, code_version
from kubetune.api.status import (
    TOP_TRIALS,
    BestTrial,
    CVRecord,
    DatasetRecord,
    Interval,
    StageReport,
    TrialCounts,
    TrialSummary,
    TuningJobStatus,
    now,
)
from kubetune.planning import grid_values, planned_trials

MiB = 1024 * 1024
GOAL_MEMORY_MIB = 250
GOAL_SECONDS = 120.0
OPERATOR_TOKEN = "kubetune-operator-bench"
"""The operator's kubeconfig token: how the mock tells its requests from everyone else's."""
USER_TOKEN = "bench-user"
CONTROLLER_TOKEN = "instant-job-controller"
MANAGED = "app.kubernetes.io/managed-by=kubetune-operator"
SPEC: dict[str, Any] = {
    "estimator": {"name": "SVC"},
    "dataset": {"builtin": "iris"},
    "parameters": [
        {"name": "C", "float": {"low": 0.01, "high": 100.0, "log": True}},
        {"name": "kernel", "categorical": ["rbf", "linear", "poly"]},
    ],
    "cv": {"folds": 3},
    "search": {
        "method": "progressive",
        "seed": 7,
        "stages": [{"method": "grid", "gridPoints": 2}, {"method": "random", "trials": 3}],
        "refinement": {"factor": 0.2, "topK": 2},
    },
}
"""s1-grid (2 x 3 = 6 trials), then s2-random (3 trials): the operator tests' spec."""


# --- the runner and the Job controller, instantly ---------------------------------------------


def stage_index(stage: str) -> int:
    """0 for s1-grid, 1 for s2-random (stage names are s<N>-<method>)."""
    return int(stage[1:].split("-", 1)[0]) - 1


def runner_status(job: dict[str, Any], previous: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The TuningJob and the status patch of the stage runner's last write (final=True).

    Mirrors ``StatusReporter.status`` in ``kubetune/runner/stage.py``; the trials are the first grid
    points of the stage's frozen space with made-up scores (nothing is fitted).
    """
    task = task_of(job)
    plan, before = task.plan, task.trials_before
    planned = planned_trials(plan)
    grid = itertools.product(*(grid_values(p, grid_points=2) for p in plan.space))
    names = [p.name for p in plan.space]
    trials = [
        TrialSummary(
            trial=plan.trial_offset + i,
            stage=plan.name,
            params=dict(zip(names, values, strict=True)),
            score=round(0.9 + 0.09 * ((i * 7) % 10) / 10, 4),
            std=0.02,
        )
        for i, values in enumerate(itertools.islice(grid, planned))
    ]
    top = sorted(trials, key=lambda t: (-t.score, t.trial))
    prior = TuningJobStatus.model_validate(previous)
    earlier = [t for t in prior.top_trials if t.stage != plan.name]
    merged = sorted([*earlier, *top], key=lambda t: (-t.score, t.trial))[:TOP_TRIALS]
    best = prior.best if prior.best is not None and prior.best.stage != plan.name else None
    folds = task.spec.cv.folds
    if top and (best is None or top[0].score > best.score):
        t = top[0]
        best = BestTrial(
            **t.model_dump(),
            metric="accuracy",
            interval95=Interval(low=t.score - 0.03, high=min(1.0, t.score + 0.03)),
            fold_scores=[t.score] * folds,
        )
    report = StageReport(
        stage=plan.name,
        phase="Succeeded",
        trials=TrialCounts(completed=len(trials), planned=planned),
        best_score=top[0].score if top else None,
        top=top[: task.spec.search.refinement.top_k],
        updated_at=now(),
    )
    done = before.completed + before.failed + len(trials)
    status: dict[str, Any] = {
        "trials": {
            "completed": before.completed + len(trials),
            "failed": before.failed,
            "planned": task.planned_total,
        },
        "progress": f"{done}/{max(done, task.planned_total)}",
        "topTrials": [t.to_dict() for t in merged],
        "report": report.to_dict(),
        "reproducibility": {
            "dataset": DatasetRecord(
                source="builtin:iris", fingerprint="0" * 64, rows=150, columns=4, classes=3
            ).to_dict(),
            "cv": CVRecord(
                splitter="StratifiedKFold", folds=folds, shuffle=True, test_train_ratio=0.5
            ).to_dict(),
            "versions": {"python": "3.11", "kubetune": "0.1.0", "scikit-learn": "1.9"},
        },
    }
    if best is not None:
        status["best"] = best.to_dict()
    return task.target.name, status


def job_complete_status() -> dict[str, Any]:
    """A Job whose one pod exited 0, as ``jobsim.py``'s Job controller writes it."""
    stamp = now()
    condition = {"status": "True", "reason": "CompletionsReached", "message": ""}
    return {
        "active": 0,
        "ready": 0,
        "succeeded": 1,
        "terminating": 0,
        "startTime": stamp,
        "completionTime": stamp,
        "conditions": [
            {"type": t, **condition, "lastProbeTime": stamp, "lastTransitionTime": stamp}
            for t in ("SuccessCriteriaMet", "Complete")
        ],
    }


class InstantJobs:
    """Watches the operator's Jobs and finishes each at once: the runner's report, then Complete.

    One watch thread (the mock pushes events; no listing of 2,000 Jobs in a loop) and a few
    workers, so that one slow round trip does not hold the others.
    """

    def __init__(self, server: MockApiServer, *, workers: int = 4) -> None:
        self.api: ApiClient = server.client(token=CONTROLLER_TOKEN)
        self.workers = workers
        self.errors: list[str] = []
        self.finished = 0
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._seen: set[str] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def __enter__(self) -> InstantJobs:
        self._threads = [threading.Thread(target=self._watch, name="instant-jobs-watch")]
        self._threads += [
            threading.Thread(target=self._work, name=f"instant-jobs-{i}")
            for i in range(self.workers)
        ]
        for thread in self._threads:
            thread.daemon = True
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for _ in range(self.workers):
            self._queue.put(None)
        for thread in self._threads:
            thread.join(10)

    def _watch(self) -> None:
        version: str | None = None
        while not self._stop.is_set():
            try:
                for event in self.api.watch(
                    JOBS, resource_version=version, timeout_seconds=2, label_selector=MANAGED
                ):
                    job = event["object"]
                    version = job["metadata"].get("resourceVersion", version)
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._consider(job)
                    if self._stop.is_set():
                        return
            except (ApiError, OSError) as error:
                self.errors.append(f"watch: {error}")
                time.sleep(0.1)

    def _consider(self, job: dict[str, Any]) -> None:
        meta, status = job["metadata"], job.get("status") or {}
        if meta["name"] in self._seen or status.get("conditions") or job["spec"].get("suspend"):
            return
        self._seen.add(meta["name"])
        self._queue.put(job)

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            try:
                name = job["metadata"]["name"]
                parent = job["metadata"]["labels"]["kubetune.io/tuningjob"]
                previous = self.api.get(TUNINGJOBS, parent).get("status") or {}
                target, status = runner_status(job, previous)
                self.api.patch_status(TUNINGJOBS, target, status)
                self.api.patch_status(JOBS, name, job_complete_status())
                with self._lock:
                    self.finished += 1
            except Exception as error:  # reported, and the resource shows up as lost
                self.errors.append(f"{job['metadata']['name']}: {type(error).__name__}: {error}")


# --- the operator process and its memory ------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _kib(path: str, key: str) -> int:
    """A ``key: N kB`` line of a /proc file, in bytes (0 if the process is gone)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, through /proc/PID/task/TID/children (no scan of /proc)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
    return found


def cpu_seconds(stat_path: str) -> float:
    """utime + stime of a /proc/.../stat file."""
    try:
        fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class MemorySampler:
    """Peak RSS and PSS of a process tree, sampled from /proc every ``interval`` seconds."""

    pid: int
    interval: float = 0.05
    peak_rss: int = 0
    peak_pss: int = 0
    peak_processes: int = 0
    samples: int = 0
    last: tuple[int, int] = (0, 0)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> tuple[int, int]:
        pids = process_tree(self.pid)
        rss = sum(_kib(f"/proc/{p}/status", "VmRSS:") for p in pids)
        pss = sum(_kib(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids)
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
        self.peak_processes = max(self.peak_processes, len(pids))
        self.samples += 1
        self.last = (rss, pss)
        return rss, pss

    def start(self) -> MemorySampler:
        def loop() -> None:
            while not self._stop.wait(self.interval):
                self.sample()

        self._thread = threading.Thread(target=loop, name="memory-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


@dataclass
class Operator:
    """``python -m kubetune_operator`` against the mock, as in a Deployment (env settings)."""

    server: MockApiServer
    workdir: Path
    metrics_port: int = field(default_factory=free_port)
    command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "kubetune_operator"])
    """How to start it (a profiler may wrap it)."""
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.workdir / "operator.log"

    def start(self) -> subprocess.Popen[bytes]:
        kubeconfig = self.server.write_kubeconfig(self.workdir / "kubeconfig", token=OPERATOR_TOKEN)
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "KUBETUNE_NAMESPACES": self.server.namespace,
            "KUBETUNE_METRICS_PORT": str(self.metrics_port),
            "KUBETUNE_LIVENESS_PORT": str(free_port()),
        }
        for name in ("KUBETUNE_RESYNC_SECONDS", "KUBETUNE_REPORT_GRACE_SECONDS"):
            env.pop(name, None)  # the production defaults
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self.command,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self.process

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until it has a watch open on TuningJobs, ModelComparisons and Jobs."""
        wanted = {TUNINGJOBS, "kubetune.io/v1alpha1/modelcomparisons", JOBS}

        def watching() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the operator exited: {self.log.read_text()[-3000:]}")
            active = self.server.emulator.active_watches()
            return wanted <= {res for actor, res, _ in active if actor == OPERATOR_TOKEN}

        wait_for(watching, timeout=timeout, interval=0.1, message="the operator is not watching")

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text: str = response.read().decode()
            return text

    def stop(self) -> float:
        """SIGTERM and wait; the seconds it took to exit."""
        assert self.process is not None
        started = time.perf_counter()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return time.perf_counter() - started


# --- figures ---------------------------------------------------------------------------------


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile on cumulative (upper bound, count) buckets."""
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return math.inf  # above the highest finite bound: all a histogram can say
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return lower


def reconcile_histogram(text: str, kind: str = "TuningJob") -> dict[str, Any]:
    """Buckets, count and sum of kubetune_reconcile_duration_seconds for ``kind``."""
    buckets: list[tuple[float, float]] = []
    count = total = 0.0
    errors = coalesced = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("kind") != kind:
                continue
            if sample.name == "kubetune_reconcile_duration_seconds_bucket":
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name == "kubetune_reconcile_duration_seconds_count":
                count = sample.value
            elif sample.name == "kubetune_reconcile_duration_seconds_sum":
                total = sample.value
            elif sample.name == "kubetune_reconcile_errors_total":
                errors = sample.value
            elif sample.name == "kubetune_reconcile_coalesced_total":
                coalesced = sample.value
    return {
        "buckets": buckets,
        "count": count,
        "sum": total,
        "errors": errors,
        "coalesced": coalesced,
    }


def quantiles(values: list[float]) -> tuple[float, float, float]:
    """p50, p99 and max (nearest rank)."""
    if not values:
        return math.nan, math.nan, math.nan
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    return rank(0.5), rank(0.99), ordered[-1]


def mock_state(server: MockApiServer) -> dict[str, Any]:
    """TuningJob phases and stage Jobs per (TuningJob, stage), read in the mock's own loop."""

    def read() -> dict[str, Any]:
        phases: Counter[str] = Counter()
        past_first = 0
        jobs: Counter[tuple[str, str]] = Counter()
        for (res, _, _), obj in server.emulator.objects.items():
            if obj.deleted:
                continue
            if res.plural == "tuningjobs":
                status = obj.raw.get("status") or {}
                phases[status.get("phase") or "-"] += 1
                stages = status.get("stages") or []
                past_first += bool(stages) and stages[0].get("phase") == "Succeeded"
            elif res.plural == "jobs":
                labels = obj.raw["metadata"].get("labels") or {}
                jobs[
                    labels.get("kubetune.io/tuningjob", ""), labels.get("kubetune.io/stage", "")
                ] += 1
        return {"phases": phases, "past_first": past_first, "jobs": jobs}

    return server.call(read, timeout=30)


def analyse(server: MockApiServer, started: float) -> dict[str, Any]:
    """Per-resource milestones from the mock's request log (arrival times, this process's clock)."""
    created: dict[str, float] = {}
    job_created: dict[str, float] = {}
    job_owner: dict[str, tuple[str, str]] = {}
    job_creates: Counter[str] = Counter()
    conflicts = 0
    completed: dict[str, float] = {}
    past_first: dict[str, float] = {}
    verbs: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    for call in server.calls():
        if call.actor == USER_TOKEN and call.verb == "create" and call.status == 201:
            created[call.body["metadata"]["name"]] = call.at
        elif call.actor == CONTROLLER_TOKEN and call.plural == "jobs" and call.verb == "patch":
            completed.setdefault(call.name or "", call.at)
        elif call.actor == OPERATOR_TOKEN:
            verbs[f"{call.verb} {call.rbac_resource or call.path}"] += 1
            if call.status is not None and call.status >= 400 and call.status not in (404, 409):
                failures[f"{call.verb} {call.rbac_resource} {call.status}"] += 1
            if call.plural == "jobs" and call.verb == "create":
                meta = call.body["metadata"]
                job_creates[meta["name"]] += 1
                conflicts += call.status == 409
                if call.status == 201:
                    job_created[meta["name"]] = call.at
                    labels = meta["labels"]
                    job_owner[meta["name"]] = (
                        labels["kubetune.io/tuningjob"],
                        labels["kubetune.io/stage"],
                    )
            elif call.plural == "tuningjobs" and call.subresource == "status":
                stages = ((call.body or {}).get("status") or {}).get("stages") or []
                if stages and stages[0].get("phase") == "Succeeded":
                    past_first.setdefault(call.name or "", call.at)
    first_job = {
        tj: at
        for job, at in job_created.items()
        for tj, st in [job_owner[job]]
        if not stage_index(st)
    }
    stage1_done = {
        job_owner[job][0]: at
        for job, at in completed.items()
        if job in job_owner and not stage_index(job_owner[job][1])
    }
    return {
        "created": created,
        "pickup": [first_job[tj] - at for tj, at in created.items() if tj in first_job],
        "reaction": [at - stage1_done[tj] for tj, at in past_first.items() if tj in stage1_done],
        "past_first": past_first,
        "all_past_first": max(past_first.values()) - started if past_first else math.nan,
        "job_creates": job_creates,
        "conflicts": conflicts,
        "verbs": verbs,
        "failures": failures,
    }


# --- the run ---------------------------------------------------------------------------------


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def tuningjob(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TuningJob",
        "metadata": {"name": name},
        "spec": SPEC,
    }


def local_edits() -> str:
    """Uncommitted edits to what this benchmark runs beyond trial_runner/ (code_version's part)."""
    done = subprocess.run(
        ["git", "status", "--porcelain", "--", "operator", "tests/operator", "bench"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    return ", ".join(line[3:] for line in done.stdout.splitlines()) or "none"


def thread_cpu(name: str) -> Callable[[], float]:
    """CPU seconds so far of this process's thread called ``name``."""
    thread = next(t for t in threading.enumerate() if t.name == name)
    return lambda: cpu_seconds(f"/proc/self/task/{thread.native_id}/stat")


def measure(*, resources: int, timeout: float, rate: float = 0.0) -> dict[str, Any]:
    """One run: mock API, operator process, instant Jobs; every figure of the report.

    ``rate`` > 0 spreads the creates at that many per second instead of all at once.
    """
    result: dict[str, Any] = {"resources": resources, "rate": rate}
    load = os.getloadavg()[0]
    names = [f"bench-{i:04d}" for i in range(resources)]
    with (
        tempfile.TemporaryDirectory(prefix="kubetune-operator-scale-") as tmp,
        MockApiServer() as server,
    ):
        operator = Operator(server, Path(tmp))
        process = operator.start()
        sampler = MemorySampler(process.pid).start()
        try:
            operator.wait_ready()
            time.sleep(1.0)  # let start-up settle: the idle figure is the operator at rest
            result["idle_rss"], result["idle_pss"] = sampler.sample()
            mock_cpu = thread_cpu("kmock-api-server")
            cpu0, mock0 = cpu_seconds(f"/proc/{process.pid}/stat"), mock_cpu()
            user = server.client(token=USER_TOKEN)
            with InstantJobs(server) as jobs, ThreadPoolExecutor(8) as pool:
                started = time.monotonic()

                def create(index: int) -> dict[str, Any]:
                    if rate > 0:
                        time.sleep(max(0.0, started + index / rate - time.monotonic()))
                    return user.create(TUNINGJOBS, tuningjob(names[index]))

                creates = list(pool.map(create, range(resources)))
                result["create_seconds"] = time.monotonic() - started
                log(f"created {len(creates)} TuningJobs in {result['create_seconds']:.1f} s")
                deadline = started + timeout
                last_log, terminal = 0.0, 0
                while time.monotonic() < deadline:
                    if process.poll() is not None:
                        raise RuntimeError(
                            f"the operator exited: {operator.log.read_text()[-3000:]}"
                        )
                    state = mock_state(server)
                    terminal = state["phases"]["Succeeded"] + state["phases"]["Failed"]
                    if time.monotonic() - last_log >= 5:
                        last_log = time.monotonic()
                        log(
                            f"  {last_log - started:5.1f} s: past stage 1 {state['past_first']}, "
                            f"phases {dict(state['phases'])}, Jobs finished {jobs.finished}, "
                            f"operator RSS {sampler.last[0] / MiB:.0f} MiB"
                        )
                    if terminal >= resources:
                        break
                    time.sleep(0.25)
                ended = time.monotonic()
                time.sleep(1.0)  # anything late (a duplicate create) lands in the log too
                result["controller_errors"] = list(jobs.errors)
            result["operator_cpu"] = cpu_seconds(f"/proc/{process.pid}/stat") - cpu0
            result["mock_cpu"] = mock_cpu() - mock0
            result["wall"] = ended - started
            result["hwm"] = _kib(f"/proc/{process.pid}/status", "VmHWM:")
            result["histogram"] = reconcile_histogram(operator.metrics())
        finally:
            sampler.stop()
            result["stop_seconds"] = operator.stop() if process.poll() is None else math.nan
            result["operator_log_lines"] = operator.log.read_text(errors="replace").splitlines()
        result["exit_code"] = process.returncode
        result["state"] = mock_state(server)
        result.update(analyse(server, started))
        result["all_succeeded"] = ended - started if terminal >= resources else math.nan
        result["requests"] = len(server.calls())
    result["load"] = (load, os.getloadavg()[0])  # the machine is shared: say how busy it was
    result["peak_rss"], result["peak_pss"] = sampler.peak_rss, sampler.peak_pss
    result["processes"], result["samples"] = sampler.peak_processes, sampler.samples
    return result


def report(r: dict[str, Any], rep: Report) -> list[dict[str, Any]]:
    """Tables and goals of one run."""
    n = r["resources"]
    state = r["state"]
    jobs: Counter[tuple[str, str]] = state["jobs"]
    duplicates = sum(1 for count in jobs.values() if count > 1)
    tjs = {tj for tj, _ in jobs}
    lost = n - len(r["past_first"])
    hist = r["histogram"]
    p50, p99 = (histogram_quantile(q, hist["buckets"]) for q in (0.5, 0.99))
    pick = quantiles(r["pickup"])
    react = quantiles(r["reaction"])
    mean = hist["sum"] / hist["count"] if hist["count"] else math.nan
    wall = r["wall"]
    how = f"created at {r['rate']:g}/s" if r["rate"] else "created at once"

    top = max((b for b, _ in hist["buckets"] if not math.isinf(b)), default=math.nan)

    def ms(x: float | None) -> str:
        if x is None or math.isnan(x):
            return "-"
        return f"> {top * 1000:.0f}" if math.isinf(x) else f"{x * 1000:.0f}"

    rep.table(
        ["figure", "value"],
        [
            ("TuningJobs created (two-stage progressive, SVC on iris)", n),
            ("load average (1 min) before / after", f"{r['load'][0]:.2f} / {r['load'][1]:.2f}"),
            ("time to create them all, s", f"{r['create_seconds']:.1f}"),
            ("time from the first create until all past stage 1, s", f"{r['all_past_first']:.1f}"),
            ("time until all Succeeded (stage 2 done too), s", f"{r['all_succeeded']:.1f}"),
            (
                "past stage 1 / Succeeded at the end",
                f"{len(r['past_first'])} / {state['phases']['Succeeded']}",
            ),
            ("operator peak RSS (VmHWM), MiB", f"{r['hwm'] / MiB:.0f}"),
            ("operator peak RSS, sampled every 50 ms, MiB", f"{r['peak_rss'] / MiB:.0f}"),
            ("operator peak PSS, sampled every 50 ms, MiB", f"{r['peak_pss'] / MiB:.0f}"),
            ("operator RSS idle before the creates, MiB", f"{r['idle_rss'] / MiB:.0f}"),
            ("operator processes (with descendants)", r["processes"]),
            (
                "operator stop on SIGTERM, s (exit code)",
                f"{r['stop_seconds']:.1f} ({r['exit_code']})",
            ),
            ("reconcile pass p50 / p99, ms (histogram)", f"{ms(p50)} / {ms(p99)}"),
            ("reconcile passes, mean ms", f"{hist['count']:.0f}, {ms(mean)}"),
            (
                "watch events with no pass of their own (one was queued; metric)",
                f"{hist['coalesced']:.0f}",
            ),
            ("create -> stage-1 Job p50 / p99 / max, ms", " / ".join(ms(x) for x in pick)),
            (
                "stage-1 Job complete -> stage 1 Succeeded p50 / p99 / max, ms",
                " / ".join(ms(x) for x in react),
            ),
            ("stage Jobs in the mock (TuningJobs with any)", f"{sum(jobs.values())} ({len(tjs)})"),
            ("(TuningJob, stage) pairs with more than one Job", duplicates),
            ("operator Job creates answered 409", r["conflicts"]),
            ("operator requests failed (not 404/409)", sum(r["failures"].values())),
            ("reconcile errors (metric)", f"{hist['errors']:.0f}"),
            (
                "operator CPU s (share of the wall time)",
                f"{r['operator_cpu']:.1f} ({r['operator_cpu'] / wall:.0%})",
            ),
            (
                "mock API thread CPU s (share of the wall time)",
                f"{r['mock_cpu']:.1f} ({r['mock_cpu'] / wall:.0%})",
            ),
            (
                "API requests in all / by the operator",
                f"{r['requests']} / {sum(r['verbs'].values())}",
            ),
        ],
        caption=f"Item 5, {n} TuningJobs {how}; Jobs finished instantly by a test-side "
        "controller; operator = `python -m kubetune_operator` (production defaults)",
    )
    verbs = [(k, v) for k, v in r["verbs"].most_common() if v >= n / 10]
    rest = sum(r["verbs"].values()) - sum(v for _, v in verbs)
    rep.table(
        ["operator request", "count", "per TuningJob"],
        [(k, v, f"{v / n:.2f}") for k, v in [*verbs, ("other (discovery, lists, watches)", rest)]],
        caption="The operator's requests to the mock API",
    )
    rep.line(
        "reconcile pass = kubetune_reconcile_duration_seconds: from taking the resource's lock to "
        "the end of the pass, so it includes waiting for one of the operator's 16 pass slots and "
        "for the threads of the blocking API client; "
        "create -> stage-1 Job and stage-1 Job complete -> stage 1 Succeeded are what a user "
        "sees, from the arrival times of the requests at the mock API"
    )
    if r["failures"] or r["controller_errors"]:
        rep.line(f"failed operator requests: {dict(r['failures'])}")
        rep.line(f"controller errors (first 5): {r['controller_errors'][:5]}")
    peak = max(r["hwm"], r["peak_rss"])
    past = r["all_past_first"]
    return [
        {
            "item": "5",
            "goal": f"peak operator memory <= {GOAL_MEMORY_MIB} MiB ({n} TuningJobs {how})",
            "figure": f"{peak / MiB:.0f} MiB RSS (PSS {r['peak_pss'] / MiB:.0f} MiB)",
            "held": peak <= GOAL_MEMORY_MIB * MiB,
        },
        {
            "item": "5",
            "goal": f"all {n} past their first stage within {GOAL_SECONDS:g} s on 2 cores",
            "figure": f"{past:.1f} s" if not lost else f"{lost} never got there",
            "held": not lost and past <= GOAL_SECONDS,
        },
        {
            "item": "5",
            "goal": "nothing lost",
            "figure": f"{n - lost}/{n} past stage 1, {state['phases']['Succeeded']}/{n} Succeeded",
            "held": not lost and state["phases"]["Succeeded"] == n,
        },
        {
            "item": "5",
            "goal": "no duplicate Job",
            "figure": f"{duplicates} duplicates; {r['conflicts']} creates answered 409",
            "held": duplicates == 0 and len(tjs) == n,
        },
        {
            "item": "5",
            "goal": "reconcile latency p50/p99 (reported)",
            "figure": f"pass {ms(p50)}/{ms(p99)} ms; create -> Job {ms(pick[0])}/{ms(pick[1])} "
            f"ms; Job complete -> stage done {ms(react[0])}/{ms(react[1])} ms",
            "held": None,
        },
    ]


def run_all(
    resources: int = 1000,
    *,
    timeout: float = 300.0,
    rate: float = 0.0,
    rep: Report | None = None,
) -> list[dict[str, Any]]:
    """Run item 5 once and return its goals; tables go to ``rep`` (a new Report if None).

    ``rate`` > 0 creates the TuningJobs at that many per second (a diagnosis: the goals are
    about creating them all at once).
    """
    rep = rep or Report("Operator at scale")
    result = measure(resources=resources, timeout=timeout, rate=rate)
    goals = report(result, rep)
    warnings = [
        line for line in result["operator_log_lines"] if "[WARNING" in line or "[ERROR" in line
    ]
    if warnings:
        rep.line(f"operator log: {len(warnings)} warnings/errors, first: {warnings[0][:300]}")
    return goals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="create N per second instead of all at once"
    )
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    rep = Report("Operator at scale (issue 7, item 5)")
    rep.line(
        f"kubetune commit {code_version()}; uncommitted edits: {local_edits()}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    goals = run_all(args.resources, timeout=args.timeout, rate=args.rate, rep=rep)
    for g in goals:
        verdict = "held" if g["held"] else ("missed" if g["held"] is False else "reported")
        rep.line(f"{g['goal']}: {g['figure']} -> {verdict}")
    if args.markdown:
        rep.write_markdown(args.markdown)
    return 0 if all(g["held"] is not False for g in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
