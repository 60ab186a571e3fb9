"""Worker warm-up: `kubetune run` starts the pool before it imports the engine, and the workers
are forked from a fork server that has imported the fitting code."""

from __future__ import annotations

import gc
import multiprocessing
import os
import sys
import types
from multiprocessing import forkserver
from typing import Any

import pytest
from joblib.externals.loky.backend import context

from kubetune import pool
from kubetune.cli import _declared_parallelism

pytestmark = pytest.mark.runner


def test_warm_pool_is_the_pool_the_executor_gets() -> None:
    pool.warm_up(2)
    warmed = pool.get_pool(2)
    # The warm-up task imports the fitting code in a worker and answers with its pid.
    assert warmed.submit(pool.import_fitting_code).result(timeout=120) > 0
    assert pool.get_pool(2) is warmed


def test_one_worker_starts_no_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []
    monkeypatch.setattr(pool, "get_pool", asked.append)  # warm_up swallows errors: record
    pool.warm_up(1)
    assert asked == []


def test_a_pool_that_cannot_start_is_left_to_the_executor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(workers: int) -> Any:
        raise OSError("no processes")

    monkeypatch.setattr(pool, "get_pool", broken)
    pool.warm_up(2)  # does not raise


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"spec": {"search": {"parallelism": 3}}}, 3),
        ({"spec": {"search": {}}}, 1),
        ({"spec": {"search": {"parallelism": "two"}}}, 1),
        ({"spec": {"search": {"parallelism": 0}}}, 1),
        ({"spec": {"search": {"parallelism": 10_000}}}, 1),
        ({"spec": {"search": None}}, 1),
        ({"spec": []}, 1),
        ({}, 1),
    ],
)
def test_parallelism_read_before_validation(document: dict[str, Any], expected: int) -> None:
    assert _declared_parallelism(document) == expected


def test_settled_worker_leaves_its_imports_out_of_garbage_collection() -> None:
    import gc

    from kubetune.fold import settle_worker

    try:
        settle_worker()
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # numpy, scikit-learn and the rest of what is imported here
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0


def test_a_worker_settles_once_when_it_first_loads_the_data(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import joblib
    import numpy as np
    from sklearn.dummy import DummyClassifier
    from sklearn.pipeline import Pipeline

    from kubetune import fold

    X, y = np.zeros((12, 2)), np.array([0, 1] * 6)
    splits = [(np.arange(6), np.arange(6, 12)), (np.arange(6, 12), np.arange(6))]
    path = str(tmp_path / "data.joblib")
    joblib.dump((X, y, splits), path)
    settled: list[int] = []
    monkeypatch.setattr(fold, "settle_worker", lambda: settled.append(1))
    monkeypatch.setattr(fold, "_WORKER_DATA", {})
    pipeline = Pipeline([(fold.MODEL_STEP, DummyClassifier())])
    for k in (0, 1, 0):
        result = fold._worker_fold(path, pipeline, {}, k, ["accuracy"])
        assert result.error is None
    assert settled == [1]


def _worker_state() -> dict[str, Any]:
    # Runs as a fresh worker's first task: what it had before doing anything.
    from threadpoolctl import threadpool_info

    return {
        "pid": os.getpid(),
        "parent": os.getppid(),
        "frozen": gc.get_freeze_count(),
        "threads": {info["num_threads"] for info in threadpool_info()},
        "env": os.environ.get("OMP_NUM_THREADS"),
    }


@pytest.mark.skipif(
    "forkserver" not in multiprocessing.get_all_start_methods(), reason="no fork server here"
)
def test_workers_are_forked_from_a_server_that_imported_the_fitting_code() -> None:
    assert pool.start_fork_server(workers=2)
    workers = 2
    # Three workers first: the pool asked for next is a new one, with workers started now.
    pool.get_pool(3).submit(os.getpid).result(timeout=120)
    fresh = pool.get_pool(workers)
    states = [fresh.submit(_worker_state).result(timeout=120) for _ in range(workers)]
    for state in states:
        assert state["parent"] != os.getpid()  # a fork of the server, not of this process
        # scikit-learn and the rest came imported and frozen (kubetune.worker_preload) ...
        assert state["frozen"] > 10_000
        # ... and the thread caps reached the libraries loaded before they were known.
        assert state["threads"] == {pool.worker_threads(workers)}
        assert state["env"] == str(pool.worker_threads(workers))


def _main_module(monkeypatch: pytest.MonkeyPatch, **attributes: Any) -> None:
    main = types.ModuleType("__main__")
    for name, value in attributes.items():
        setattr(main, name, value)
    monkeypatch.setitem(sys.modules, "__main__", main)


def test_a_main_module_run_by_name_is_preloaded_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # `python -m some.module`: each worker runs the module again, its imports then loaded.
    _main_module(monkeypatch, __spec__=types.SimpleNamespace(name="some.module"))
    assert pool.preload_modules() == [pool.WORKER_PRELOAD, "some.module"]
    # A package's __main__ (`python -m kubetune.runner`, `python -m pytest`): multiprocessing
    # does not run those again.
    _main_module(monkeypatch, __spec__=types.SimpleNamespace(name="kubetune.runner.__main__"))
    assert pool.preload_modules() == [pool.WORKER_PRELOAD]
    _main_module(monkeypatch, __spec__=None)
    assert pool.preload_modules() == [pool.WORKER_PRELOAD]


@pytest.fixture
def no_start_method(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """loky's start method unset; the fork server's preloads recorded, the server not started."""
    monkeypatch.setattr(context, "_DEFAULT_START_METHOD", None)
    preloads: list[list[str]] = []
    monkeypatch.setattr(forkserver, "set_forkserver_preload", preloads.append)
    return preloads


def test_no_fork_server_for_a_script_read_from_stdin(
    monkeypatch: pytest.MonkeyPatch, no_start_method: list[list[str]]
) -> None:
    _main_module(monkeypatch, __file__="<stdin>")  # a forked worker could not run it again
    assert not pool.start_fork_server(workers=2)
    assert context.get_start_method() is None and no_start_method == []


def test_no_fork_server_where_loky_was_told_otherwise(
    monkeypatch: pytest.MonkeyPatch, no_start_method: list[list[str]]
) -> None:
    monkeypatch.setattr(context, "_DEFAULT_START_METHOD", "loky")
    assert not pool.start_fork_server(workers=2)
    assert context.get_start_method() == "loky" and no_start_method == []


def test_a_fork_server_that_cannot_start_leaves_loky_as_it_was(
    monkeypatch: pytest.MonkeyPatch, no_start_method: list[list[str]]
) -> None:
    def too_long() -> None:
        raise OSError("AF_UNIX path too long")

    monkeypatch.setattr(forkserver, "ensure_running", too_long)
    assert not pool.start_fork_server(workers=2)
    assert context.get_start_method() is None
    # warm_up then starts the workers the way loky does (each imports the fitting code).
    started: list[int] = []
    monkeypatch.setattr(pool, "get_pool", lambda workers: started.append(workers))
    pool.warm_up(2)
    assert started == [2]


# Run as a fresh process: a fork server of its own, started for 2 workers and the job's modules.
_FRESH_SERVER = """
import json, os, sys

def worker_state(names):
    import gc
    # The environment the server started with.
    with open(f"/proc/{os.getppid()}/environ", "rb") as handle:
        server = dict(
            item.decode().split("=", 1) for item in handle.read().split(b"\\0") if b"=" in item
        )
    return {
        "parent": os.getppid(),
        "neighbors": "sklearn.neighbors" in sys.modules,
        "frozen": gc.get_freeze_count(),
        "server_env": {n: v for n, v in server.items() if n in names},
        "modules_env": os.environ.get("KUBETUNE_WORKER_MODULES"),
    }

if __name__ == "__main__":
    from kubetune import pool
    for name in pool.BLAS_THREAD_VARIABLES:
        os.environ.pop(name, None)
    assert "sklearn.neighbors" not in sys.modules
    assert pool.start_fork_server(workers=2, modules=["sklearn.neighbors", "not_installed_kt"])
    # This process's environment is as it was: only the server got the caps and the modules.
    leaked = [n for n in (*pool.BLAS_THREAD_VARIABLES, pool.MODULES_ENV) if n in os.environ]
    executor = pool.get_pool(2)
    state = executor.submit(worker_state, sys.argv[1].split(",")).result(timeout=120)
    state["main"] = os.getpid()
    state["leaked"] = leaked
    print(json.dumps(state))
"""


@pytest.mark.skipif(
    "forkserver" not in multiprocessing.get_all_start_methods() or not os.path.isdir("/proc"),
    reason="no fork server here, or no /proc to read its environment from",
)
def test_the_fork_server_imports_the_jobs_modules_with_the_workers_thread_caps(
    tmp_path: Any,
) -> None:
    import json
    import subprocess

    script = tmp_path / "fresh_server.py"
    script.write_text(_FRESH_SERVER)
    names = ",".join([*pool.BLAS_THREAD_VARIABLES, pool.MODULES_ENV])
    done = subprocess.run(
        [sys.executable, str(script), names],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout.strip().splitlines()[-1])
    assert state["parent"] != state["main"]  # forked by the server
    assert state["neighbors"]  # imported by the server, not by the task (it needs none)
    assert state["frozen"] > 10_000
    assert state["modules_env"] is None  # read by the server's preload, then dropped
    # The server started with the workers' thread caps (so its BLAS and OpenMP never had more
    # threads) and the job's modules; this process's environment is as it was.
    assert state["server_env"] == {
        **pool.worker_env(2),
        pool.MODULES_ENV: "sklearn.neighbors,not_installed_kt",
    }
    assert state["leaked"] == []


def test_the_fork_server_imports_only_allow_listed_modules(tmp_path: Any) -> None:
    import subprocess

    # A name off the allow-lists in the variable is never imported (wave: a stdlib module that
    # nothing here imports).
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys; import kubetune.worker_preload; "
            "print('sklearn.svm' in sys.modules, 'wave' in sys.modules, "
            f"{pool.MODULES_ENV!r} in os.environ)",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(sys.path),
            pool.MODULES_ENV: "sklearn.svm,wave",
        },
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False", "False"]


def test_without_a_fork_server_each_worker_imports_the_jobs_modules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib

    monkeypatch.setattr(pool, "start_fork_server", lambda **_: False)
    sent: list[tuple[Any, ...]] = []

    class Pool:
        def submit(self, *args: Any) -> None:
            sent.append(args)

    monkeypatch.setattr(pool, "get_pool", lambda workers: Pool())
    pool.warm_up(2, modules=["sklearn.svm"])
    assert sent == [(pool.import_fitting_code, ["sklearn.svm"])] * 2
    # There (as in the fork server), a module that is not installed or fails to import is
    # skipped: only the fits that need it fail, later, with the reason.
    imported: list[str] = []
    real = importlib.import_module

    def record(name: str) -> Any:
        imported.append(name)
        if name == "broken_kt":
            raise OSError("libomp.so: cannot open shared object file")
        return real(name)

    monkeypatch.setattr(importlib, "import_module", record)
    try:
        modules = ["broken_kt", "not_installed_kt", "sklearn.svm"]
        assert pool.import_fitting_code(modules) == os.getpid()
    finally:
        gc.unfreeze()  # it froze this process's objects, as it does a worker's
    assert imported == modules


def test_kubetune_run_names_the_models_of_the_yaml_to_the_warm_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pathlib import Path

    from kubetune import cli

    asked: list[tuple[int, list[str]]] = []
    monkeypatch.setattr(pool, "warm_up", lambda workers, modules: asked.append((workers, modules)))
    example = Path(__file__).resolve().parents[2] / "examples" / "modelcomparison.yaml"
    cli.load(example, warm_workers=3)
    # RandomForest and HistGradientBoosting, SVC after a StandardScaler.
    assert asked == [(3, ["sklearn.ensemble", "sklearn.preprocessing", "sklearn.svm"])]
