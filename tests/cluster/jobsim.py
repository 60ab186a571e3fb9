"""A test-side Job controller and kubelet: the mock API's batch/v1 Jobs run as local processes.

:class:`JobSimulator` polls the Jobs of one namespace in a :class:`MockApiServer` from a single
thread and plays the two parts of Kubernetes that make a Job run:

* **the kubelet**: for each pod it starts the pod template's (single) container command as a
  local subprocess (a leading ``python`` becomes ``sys.executable``) with the template's env
  (literal values; ``valueFrom.fieldRef`` ``metadata.name``, ``metadata.namespace`` or
  ``metadata.uid``), plus ``KUBECONFIG`` (a kubeconfig for the mock API whose token is the pod's
  name, so the mock records the pod's requests under that actor), ``KUBETUNE_TERMINATION_LOG``
  (a per-pod file: the runner's last words, read back as the termination message, with
  ``FallbackToLogsOnError``), ``PYTHONPATH`` (so that ``kubetune`` imports), and its own working
  directory, ``HOME`` and ``TMPDIR``. Nothing else of the test's environment is passed on (in
  particular no ``KUBERNETES_SERVICE_HOST``: the runner must find the mock, never a real cluster).
  The pod is a Pod object in the mock (``job-name`` and ``controller-uid`` labels plus the
  template's labels, an owner reference to its Job) whose status follows the process: Running,
  then Succeeded or Failed with the container's ``state.terminated`` (``exitCode``, ``reason``
  ``Completed``/``Error``/``OOMKilled``, ``message``).
* **the Job controller**: it writes the Job's status as Kubernetes does: ``startTime``,
  ``active``, ``succeeded``/``failed`` counters, ``completionTime``, and the conditions
  (``SuccessCriteriaMet`` + ``Complete``; ``FailureTarget`` + ``Failed`` with reason
  ``PodFailurePolicy``, ``BackoffLimitExceeded`` or ``DeadlineExceeded``; ``Suspended``). A failed
  pod is matched against ``spec.podFailurePolicy`` (``onExitCodes`` rules, ``In``/``NotIn``;
  actions ``FailJob``, ``Ignore``, ``Count``), then counted against ``spec.backoffLimit``: within
  the limit a replacement pod starts (after ``retry_delay`` seconds, not Kubernetes' 10 s
  back-off). ``spec.activeDeadlineSeconds`` kills the pod and fails the Job. A suspended Job's
  pod is killed (not counted as a failure) and a new one starts when it is resumed, with a fresh
  ``startTime``. A deleted Job's processes are killed and its Pods deleted (the garbage
  collector's part, which the mock does not model).

:meth:`JobSimulator.kill_pod` SIGKILLs a running pod's processes, as a lost node would; the Job
controller then counts the failure and starts a replacement if ``backoffLimit`` allows.

Every pod runs in its own session, and a kill reaches its whole process group plus any
descendant found in ``/proc`` (joblib's worker processes), so nothing outlives :meth:`stop`
(also registered with :mod:`atexit` as a last resort).

Not modelled: more than one container, ``parallelism``/``completions`` other than 1, indexed
Jobs, ``onPodConditions`` rules, ``successPolicy``, ``ttlSecondsAfterFinished``, pod
``restartPolicy: OnFailure``, ``backoffLimitPerIndex``, volumes (mounts are not created), and
resource limits (nothing is OOM-killed unless a test asks :meth:`kill_pod` for it).
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import datetime
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.operator.harness import JOBS, PODS, ApiError, MockApiServer, wait_for

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
RUNNER_SOURCES = REPO / "trial_runner"
CONTROLLER_TOKEN = "job-controller"
"""The actor of the simulator's own requests (Jobs and Pods), as the mock records them."""
NODE_NAME = "sim-node-1"
MAX_MESSAGE = 4096
"""Kubernetes keeps at most 4096 bytes of a termination message."""
LOG_TAIL_LINES, LOG_TAIL_BYTES = 80, 2048
"""What ``FallbackToLogsOnError`` takes from the end of the container's logs."""
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_LIVE = weakref.WeakSet["JobSimulator"]()


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _exit_code(returncode: int) -> int:
    """A container's exit code as Kubernetes reports it: 128 + N for a signal N."""
    return 128 - returncode if returncode < 0 else returncode


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from ``/proc``; empty where there is none)."""
    children: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            # "pid (comm) state ppid ...": comm may contain spaces and parentheses.
            fields = stat.rsplit(")", 1)[-1].split()
            if len(fields) > 1:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _pids_with_env(name: str, prefix: str) -> list[int]:
    """Live processes (other than zombies) whose environment has ``name=<prefix>...``."""
    wanted = f"{name}={prefix}".encode()
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = Path(entry.path, "environ").read_bytes()
                state = Path(entry.path, "stat").read_text().rsplit(")", 1)[-1].split()[0]
            except OSError:
                continue
            if state != "Z" and any(v.startswith(wanted) for v in environ.split(b"\0")):
                found.append(int(entry.name))
    return found


@dataclass(eq=False)
class PodRun:
    """One simulated pod: a local process standing in for its one container."""

    name: str
    job: str
    job_uid: str
    dir: Path
    container: str
    argv: list[str]
    env: dict[str, str]
    started: float
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    exit_code: int | None = None
    reason: str | None = None
    """``Completed``, ``Error`` or ``OOMKilled`` once terminated."""
    message: str = ""
    """The termination message the kubelet would report."""
    killed: str | None = None
    """Why the simulator killed it (``NodeLost``, ``OOMKilled``, ``Suspended``, ``Deleted``,
    ``DeadlineExceeded``, ``Shutdown``), or None when it exited on its own."""
    ended: float | None = None

    @property
    def stdout_path(self) -> Path:
        return self.dir / "stdout"

    @property
    def stderr_path(self) -> Path:
        return self.dir / "stderr"

    @property
    def termination_log(self) -> Path:
        return self.dir / "termination-log"

    @property
    def actor(self) -> str:
        """How the mock API labels this pod's requests (its kubeconfig's token)."""
        return self.name

    @property
    def running(self) -> bool:
        return self.exit_code is None

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""


@dataclass
class _JobState:
    name: str
    uid: str
    pods: list[PodRun] = field(default_factory=list)
    failed: int = 0
    succeeded: int = 0
    start_time: str | None = None
    start_mono: float | None = None
    completion_time: str | None = None
    conditions: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False
    suspended: bool = False
    next_start: float = 0.0
    written: dict[str, Any] | None = None

    def running_pod(self) -> PodRun | None:
        return next((p for p in reversed(self.pods) if p.running), None)

    def condition(self, ctype: str, status: str, reason: str, message: str) -> None:
        stamp = _now()
        for cond in self.conditions:
            if cond["type"] == ctype:
                if (cond["status"], cond["reason"], cond["message"]) != (status, reason, message):
                    if cond["status"] != status:
                        cond["lastTransitionTime"] = stamp
                    cond.update(status=status, reason=reason, message=message)
                    cond["lastProbeTime"] = stamp
                return
        self.conditions.append(
            {
                "type": ctype,
                "status": status,
                "reason": reason,
                "message": message,
                "lastProbeTime": stamp,
                "lastTransitionTime": stamp,
            }
        )

    def status(self) -> dict[str, Any]:
        running = self.running_pod()
        status: dict[str, Any] = {
            "active": 1 if running is not None else 0,
            "ready": 1 if running is not None else 0,
            "failed": self.failed,
            "succeeded": self.succeeded,
            "terminating": 0,
            "conditions": copy.deepcopy(self.conditions),
        }
        if not self.failed:
            status.pop("failed")
        if not self.succeeded:
            status.pop("succeeded")
        if self.start_time:
            status["startTime"] = self.start_time
        if self.completion_time:
            status["completionTime"] = self.completion_time
        if not self.conditions:
            status.pop("conditions")
        return status


class JobSimulator:
    """The Job controller and the kubelet for one namespace of a :class:`MockApiServer`.

    Use as a context manager (or :meth:`start` and :meth:`stop`). ``workdir`` receives one
    folder per pod (``stdout``, ``stderr``, ``termination-log``, ``kubeconfig``, ``work/``,
    ``tmp/``). ``extra_env`` is added to every pod's environment (the template's env wins).
    """

    def __init__(
        self,
        server: MockApiServer,
        workdir: Path,
        *,
        namespace: str | None = None,
        poll_interval: float = 0.1,
        retry_delay: float = 0.2,
        extra_env: dict[str, str] | None = None,
        seed: int = 0,
    ) -> None:
        self.server = server
        self.namespace = namespace or server.namespace
        self.workdir = Path(workdir)
        self.poll_interval = poll_interval
        self.retry_delay = retry_delay
        self.extra_env = dict(extra_env or {})
        self.api = server.client(namespace=self.namespace, token=CONTROLLER_TOKEN)
        self.errors: list[str] = []
        """Unexpected failures inside the simulator's loop (a test should expect none)."""
        self._names = random.Random(seed)
        self._jobs: dict[str, _JobState] = {}
        self._finished_pods: list[PodRun] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._tmpdirs: list[Path] = []

    # ---- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> JobSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> JobSimulator:
        if self._thread is not None:
            raise RuntimeError("the Job simulator is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._stop.clear()
        self._thread = threading.Thread(target=self._main, name="job-simulator", daemon=True)
        _LIVE.add(self)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop, then kill every process still running (no orphans)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():  # pragma: no cover - a hung API call
                logger.warning("the Job simulator's thread did not stop in %ss", timeout)
            self._thread = None
        self.kill_all()
        for tmp in self._tmpdirs:
            shutil.rmtree(tmp, ignore_errors=True)
        self._tmpdirs.clear()

    def kill_all(self) -> None:
        """SIGKILL every pod process still running, and anything they spawned (idempotent)."""
        with self._lock:
            pods = [p for s in self._jobs.values() for p in s.pods if p.process is not None]
        for pod in pods:
            if pod.process is not None and pod.process.poll() is None:
                self._signal(pod, signal.SIGKILL)
                pod.killed = pod.killed or "Shutdown"
            self._reap(pod)
        for pid in _pids_with_env("KUBECONFIG", str(self.workdir) + os.sep):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    # ---- what tests use ----------------------------------------------------------------------

    def pods(self, job: str | None = None) -> list[PodRun]:
        """Every pod started so far (of ``job``, if given), oldest first."""
        with self._lock:
            pods = [p for s in self._jobs.values() for p in s.pods] + self._finished_pods
            pods = list(dict.fromkeys(pods))
        pods.sort(key=lambda p: p.started)
        return [p for p in pods if job is None or p.job == job]

    def running_pod(self, job: str) -> PodRun | None:
        with self._lock:
            state = self._jobs.get(job)
            return state.running_pod() if state else None

    def wait_running(self, job: str, timeout: float = 30.0) -> PodRun:
        """Wait until ``job`` has a running pod; return it."""
        return wait_for(
            lambda: self.running_pod(job),
            timeout=timeout,
            message=lambda: f"no running pod of Job {job}; pods: {self.pods()}",
        )

    def wait_pods(self, job: str, count: int, timeout: float = 30.0) -> list[PodRun]:
        """Wait until ``job`` has had at least ``count`` pods; return them."""
        return wait_for(
            lambda: len(pods := self.pods(job)) >= count and pods,
            timeout=timeout,
            message=lambda: f"Job {job} has not had {count} pods: {self.pods(job)}",
        )

    def kill_pod(self, job: str, *, reason: str = "NodeLost") -> PodRun:
        """SIGKILL the running pod of ``job`` (a lost node; ``OOMKilled`` for the OOM killer).

        The Job controller then sees a failed pod (exit code 137) and, within the Job's
        ``backoffLimit``, starts a replacement.
        """
        with self._lock:
            pod = self.running_pod(job)
            if pod is None or pod.process is None or pod.process.poll() is not None:
                raise LookupError(f"Job {job} has no running pod")
            pod.killed = reason
            self._signal(pod, signal.SIGKILL)
        self._wake.set()
        return pod

    def finished(self, job: str) -> bool:
        with self._lock:
            state = self._jobs.get(job)
            return bool(state and state.finished)

    def job_names(self) -> list[str]:
        with self._lock:
            return sorted(self._jobs)

    def processes_alive(self) -> list[int]:
        """PIDs of every live process that a pod started (its command, or anything it spawned).

        Found by the pod's ``KUBECONFIG`` in ``/proc/PID/environ``, which children inherit, so
        a worker process whose parent died is found too.
        """
        alive = {
            pod.process.pid
            for pod in self.pods()
            if pod.process is not None and pod.process.poll() is None
        }
        return sorted(alive | set(_pids_with_env("KUBECONFIG", str(self.workdir) + os.sep)))

    # ---- the loop ----------------------------------------------------------------------------

    def _main(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception as error:  # keep serving; a test checks self.errors
                logger.exception("the Job simulator's pass failed")
                self.errors.append(f"{type(error).__name__}: {error}")
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    def _tick(self) -> None:
        try:
            jobs = self.api.jobs()
        except (ApiError, OSError) as error:
            if not self._stop.is_set():
                logger.warning("cannot list Jobs: %s", error)
            return
        with self._lock:
            current = {}
            for job in jobs:
                meta = job["metadata"]
                current[meta["name"]] = meta.get("uid", "")
                state = self._jobs.get(meta["name"])
                if state is not None and state.uid != meta.get("uid", ""):
                    self._forget(state)  # deleted and created again under the same name
                    state = None
                if state is None:
                    state = self._jobs[meta["name"]] = self._adopt(job)
                if self._stop.is_set():
                    return
                try:
                    self._sync(state, job)
                except (ApiError, OSError) as error:
                    logger.warning("Job %s: %s", state.name, error)
            for name in [n for n in self._jobs if n not in current]:
                self._forget(self._jobs[name])

    def _adopt(self, job: dict[str, Any]) -> _JobState:
        """A Job seen for the first time (finished ones, made before the simulator, are left)."""
        meta, status = job["metadata"], job.get("status") or {}
        state = _JobState(name=meta["name"], uid=meta.get("uid", ""))
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        if conditions.get("Complete") == "True" or conditions.get("Failed") == "True":
            state.finished = True
        return state

    def _forget(self, state: _JobState) -> None:
        """The Job is gone: kill its pod and delete its Pods (background propagation)."""
        for pod in state.pods:
            if pod.running:
                if pod.process is not None and pod.process.poll() is None:
                    pod.killed = "Deleted"
                    self._signal(pod, signal.SIGKILL)
                self._reap(pod)
                code = pod.process.returncode if pod.process else None
                pod.exit_code = _exit_code(code if code is not None else -signal.SIGKILL)
                pod.reason = "Completed" if pod.exit_code == 0 else "Error"
                pod.ended = time.monotonic()
            with contextlib.suppress(ApiError):
                self.api.delete(PODS, pod.name)
        self._finished_pods += state.pods
        del self._jobs[state.name]

    def _sync(self, state: _JobState, job: dict[str, Any]) -> None:
        if state.finished:
            return
        spec = job.get("spec") or {}
        running = state.running_pod()
        if running is not None and running.process and running.process.poll() is not None:
            self._pod_exited(state, running, spec)
            self._write_status(state)  # the failure is counted before any replacement starts
            running = None
        if not state.finished:
            if spec.get("suspend"):
                if running is not None:
                    running.killed = "Suspended"
                    self._signal(running, signal.SIGKILL)
                    self._reap(running)
                    self._pod_terminated(running)
                    with contextlib.suppress(ApiError):
                        self.api.delete(PODS, running.name)
                if not state.suspended:
                    state.suspended = True
                    state.condition("Suspended", "True", "JobSuspended", "Job suspended")
                    state.start_time = state.start_mono = None
            else:
                if state.suspended:
                    state.suspended = False
                    state.condition("Suspended", "False", "JobResumed", "Job resumed")
                deadline = spec.get("activeDeadlineSeconds")
                elapsed = time.monotonic() - (state.start_mono or time.monotonic())
                if deadline is not None and state.start_mono is not None and elapsed > deadline:
                    if running is not None:
                        running.killed = "DeadlineExceeded"
                        self._signal(running, signal.SIGKILL)
                        self._reap(running)
                        self._pod_terminated(running)
                        state.failed += 1
                    self._fail(
                        state, "DeadlineExceeded", "Job was active longer than specified deadline"
                    )
                elif running is None and time.monotonic() >= state.next_start:
                    self._start_pod(state, job)
        self._write_status(state)

    def _write_status(self, state: _JobState) -> None:
        status = state.status()
        if status == state.written:
            return
        try:
            self.api.patch_status(JOBS, state.name, status)
        except ApiError as error:
            if error.status != 404:
                raise
            return  # deleted in between: the next pass forgets it
        state.written = status

    # ---- the Job controller's decisions -----------------------------------------------------

    def _pod_exited(self, state: _JobState, pod: PodRun, spec: dict[str, Any]) -> None:
        self._reap(pod)
        self._pod_terminated(pod)
        assert pod.exit_code is not None
        if pod.exit_code == 0:
            state.succeeded = 1
            state.completion_time = _now()
            state.condition("SuccessCriteriaMet", "True", "CompletionsReached", "")
            state.condition("Complete", "True", "CompletionsReached", "")
            state.finished = True
            return
        action, index = self._failure_action(spec, pod)
        if action == "Ignore":
            state.next_start = time.monotonic() + self.retry_delay
            return
        state.failed += 1
        if action == "FailJob":
            message = (
                f"Container {pod.container} for pod {self.namespace}/{pod.name} failed "
                f"with exit code {pod.exit_code} matching FailJob rule at index {index}"
            )
            self._fail(state, "PodFailurePolicy", message)
        elif state.failed > int(spec.get("backoffLimit", 6)):
            self._fail(state, "BackoffLimitExceeded", "Job has reached the specified backoff limit")
        else:
            state.next_start = time.monotonic() + self.retry_delay

    def _failure_action(self, spec: dict[str, Any], pod: PodRun) -> tuple[str, int | None]:
        """What spec.podFailurePolicy says about a failed pod: (action, rule index)."""
        container = (self._container(spec) or {}).get("name")
        rules = (spec.get("podFailurePolicy") or {}).get("rules") or []
        for index, rule in enumerate(rules):
            codes = rule.get("onExitCodes")
            if not codes:
                continue  # onPodConditions rules are not modelled
            if codes.get("containerName") not in (None, container):
                continue
            values = set(codes.get("values") or [])
            inside = pod.exit_code in values
            if (codes.get("operator") == "In" and inside) or (
                codes.get("operator") == "NotIn" and not inside
            ):
                return str(rule.get("action")), index
        return "Count", None

    def _fail(self, state: _JobState, reason: str, message: str) -> None:
        state.condition("FailureTarget", "True", reason, message)
        state.condition("Failed", "True", reason, message)
        state.finished = True

    # ---- the kubelet -------------------------------------------------------------------------

    @staticmethod
    def _container(spec: dict[str, Any]) -> dict[str, Any] | None:
        containers = (((spec.get("template") or {}).get("spec") or {}).get("containers")) or []
        return containers[0] if containers else None

    def _pod_name(self, job: str) -> str:
        taken = {p.name for p in self.pods()}
        while True:
            name = f"{job}-{''.join(self._names.choices(_ALPHABET, k=5))}"
            if name not in taken:
                return name

    def _start_pod(self, state: _JobState, job: dict[str, Any]) -> None:
        spec = job["spec"]
        template = spec.get("template") or {}
        pod_spec = copy.deepcopy(template.get("spec") or {})
        containers = pod_spec.get("containers") or []
        if len(containers) != 1:
            raise ValueError(f"Job {state.name}: only one container is modelled")
        container = containers[0]
        name = self._pod_name(state.name)
        folder = self.workdir / name
        (folder / "work").mkdir(parents=True)
        # The pod's /tmp (an emptyDir): a short path as there, since a Unix socket's path (the
        # runner's fork server listens on one in it) must fit in 108 bytes; tmp links to it.
        tmp = Path(tempfile.mkdtemp(prefix="kt-pod-"))
        self._tmpdirs.append(tmp)
        (folder / "tmp").symlink_to(tmp, target_is_directory=True)
        kubeconfig = self.server.write_kubeconfig(
            folder / "kubeconfig", token=name, namespace=self.namespace
        )
        pod_uid = f"pod-{name}"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(folder / "work"),
            "TMPDIR": str(tmp),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(RUNNER_SOURCES),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "KUBECONFIG": str(kubeconfig),
            "KUBETUNE_TERMINATION_LOG": str(folder / "termination-log"),
            **self.extra_env,
        }
        fields = {
            "metadata.name": name,
            "metadata.namespace": self.namespace,
            "metadata.uid": pod_uid,
            "spec.nodeName": NODE_NAME,
            "spec.serviceAccountName": pod_spec.get("serviceAccountName", "default"),
        }
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = str(var["value"])
            elif "fieldRef" in (var.get("valueFrom") or {}):
                path = var["valueFrom"]["fieldRef"].get("fieldPath")
                if path not in fields:
                    raise ValueError(f"Job {state.name}: fieldRef {path} is not modelled")
                env[var["name"]] = fields[path]
            else:
                raise ValueError(f"Job {state.name}: env {var['name']} is not modelled")
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        if not argv:
            raise ValueError(f"Job {state.name}: the container has no command (no image here)")
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable

        labels = {
            **((template.get("metadata") or {}).get("labels") or {}),
            "job-name": state.name,
            "batch.kubernetes.io/job-name": state.name,
            "controller-uid": state.uid,
            "batch.kubernetes.io/controller-uid": state.uid,
        }
        pod_spec["nodeName"] = NODE_NAME
        self.api.create(
            PODS,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "labels": labels,
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1",
                            "kind": "Job",
                            "name": state.name,
                            "uid": state.uid,
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": pod_spec,
            },
        )
        stamp = _now()
        pod = PodRun(
            name=name,
            job=state.name,
            job_uid=state.uid,
            dir=folder,
            container=container.get("name", ""),
            argv=argv,
            env=env,
            started=time.monotonic(),
        )
        with (
            pod.stdout_path.open("wb") as out,
            pod.stderr_path.open("wb") as err,
        ):
            pod.process = subprocess.Popen(
                argv,
                cwd=folder / "work",
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # its own process group: a kill reaches every worker
            )
        state.pods.append(pod)
        if state.start_time is None:
            state.start_time, state.start_mono = stamp, time.monotonic()
        self.api.patch_status(
            PODS,
            name,
            {
                "phase": "Running",
                "hostIP": "10.0.0.1",
                "podIP": "10.244.0.10",
                "startTime": stamp,
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp},
                    {"type": "Ready", "status": "True", "lastTransitionTime": stamp},
                ],
                "containerStatuses": [
                    {
                        "name": container.get("name", ""),
                        "image": container.get("image", ""),
                        "imageID": "",
                        "ready": True,
                        "started": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": stamp}},
                    }
                ],
            },
        )
        logger.info("started pod %s of Job %s: %s", name, state.name, argv)

    def _pod_terminated(self, pod: PodRun) -> None:
        """Record the container's end and write it to the Pod's status."""
        proc = pod.process
        assert proc is not None
        pod.exit_code = _exit_code(proc.returncode if proc.returncode is not None else -9)
        pod.ended = time.monotonic()
        pod.reason = (
            "Completed"
            if pod.exit_code == 0
            else "OOMKilled"
            if pod.killed == "OOMKilled"
            else "Error"
        )
        message = ""
        if pod.termination_log.exists():
            message = pod.termination_log.read_bytes()[:MAX_MESSAGE].decode(errors="replace")
        if not message.strip() and pod.exit_code != 0:
            # terminationMessagePolicy FallbackToLogsOnError: the end of the container's logs.
            logs = (pod.stdout() + pod.stderr()).splitlines()[-LOG_TAIL_LINES:]
            message = "\n".join(logs)[-LOG_TAIL_BYTES:]
        pod.message = message
        stamp = _now()
        terminated: dict[str, Any] = {
            "exitCode": pod.exit_code,
            "reason": pod.reason,
            "startedAt": stamp,
            "finishedAt": stamp,
        }
        if message:
            terminated["message"] = message
        status: dict[str, Any] = {
            "phase": "Succeeded" if pod.exit_code == 0 else "Failed",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp},
                {"type": "Ready", "status": "False", "lastTransitionTime": stamp},
            ],
            "containerStatuses": [
                {
                    "name": pod.container,
                    "image": "",
                    "imageID": "",
                    "ready": False,
                    "started": False,
                    "restartCount": 0,
                    "state": {"terminated": terminated},
                }
            ],
        }
        if pod.killed in ("NodeLost", "Suspended", "Deleted"):
            reason = {"NodeLost": "DeletionByPodGC", "Suspended": "JobSuspended"}.get(
                pod.killed, "DeletionByTaintManager"
            )
            status["conditions"].append(
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": reason,
                    "lastTransitionTime": stamp,
                }
            )
        with contextlib.suppress(ApiError):
            self.api.patch_status(PODS, pod.name, status)
        logger.info("pod %s exited with %s (%s)", pod.name, pod.exit_code, pod.killed or "")

    @staticmethod
    def _signal(pod: PodRun, sig: signal.Signals) -> None:
        proc = pod.process
        if proc is None or proc.poll() is not None:
            return
        targets = [proc.pid, *_descendants(proc.pid)]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        for pid in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    @staticmethod
    def _reap(pod: PodRun, timeout: float = 10.0) -> None:
        proc = pod.process
        if proc is None:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
            logger.warning("pod %s did not die", pod.name)


@atexit.register
def _kill_leftovers() -> None:
    for sim in list(_LIVE):
        with contextlib.suppress(Exception):
            sim.kill_all()
