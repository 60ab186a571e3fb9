"""The worker processes: joblib's reusable pool, and starting it before it is needed.

Workers are forked from a fork server (``multiprocessing``'s ``forkserver`` start method, which
loky supports) that has imported scikit-learn and the job's estimators once. ``kubetune run``
starts that server as soon as it has read the YAML, and a stage Job's ``python -m
kubetune.runner`` as soon as it has read its task, so that it imports while the main process
imports the engine and loads the data; when the executor asks for the pool, each worker is a
fork of the server with nothing left to import.
At parallelism 2 on 2 cores this replaces two imports of scikit-learn, made at the same time as
the main process's own, with one, and the workers share the server's imported modules in memory
until they write to them (bench/worker_start.py, bench/datasize.py).

As with multiprocessing's spawn and forkserver methods, each worker runs the main script again
without its ``if __name__ == "__main__"`` block: a script that runs kubetune's engine needs that
guard. Where there is no fork server (Windows), someone else chose loky's start method, the main
script was read from standard input or the server cannot start, workers start as loky starts
them and :func:`warm_up` has each import the fitting code in the background instead.

Kept light (no scikit-learn or optuna here): it is imported before them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

BLAS_THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
)

# What the fork server imports before it forks a worker, and the variable that names the job's
# estimator and step modules for it to import too.
WORKER_PRELOAD = "kubetune.worker_preload"
MODULES_ENV = "KUBETUNE_WORKER_MODULES"


def usable_cores() -> int:
    """The CPUs this process may use, as joblib counts them for ``n_jobs=-1``.

    The affinity mask and the cgroup's CPU quota (a pod's CPU limit) count: ``os.cpu_count()``
    sees every core of the node, and BLAS or OpenMP threads past the quota only get throttled.
    """
    from joblib import cpu_count

    return max(1, cpu_count())


def worker_threads(workers: int, *, cores: int | None = None) -> int:
    """BLAS and OpenMP threads for each worker, as joblib sets them: the cores split between them.

    Without a limit BLAS and OpenMP inside each fit would start a thread per core in every worker
    and oversubscribe the machine. ``cores`` defaults to :func:`usable_cores`.
    """
    return max(1, (usable_cores() if cores is None else cores) // workers)


def worker_env(workers: int, *, cores: int | None = None) -> dict[str, str]:
    """The thread limits as environment variables, for workers that load the libraries later."""
    threads = str(worker_threads(workers, cores=cores))
    return {name: threads for name in BLAS_THREAD_VARIABLES}


def limit_in_process() -> Any:
    """Cap BLAS and OpenMP in this process at the usable cores, where they are fewer than the
    machine's (a CPU quota or an affinity mask); None where there is nothing to cap.

    For the fits of one worker, which run in this process: the caller restores the libraries'
    limits with the returned limiter's ``restore_original_limits()``.
    """
    cores = usable_cores()
    if cores >= (os.cpu_count() or 1):
        return None
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=cores)


def get_pool(workers: int) -> Any:
    """joblib's reusable process pool with ``workers`` workers (the one ``Parallel`` uses).

    The same arguments give back the same pool, already started, so the executor reuses what
    :func:`warm_up` began; scikit-learn's own ``n_jobs`` keeps working in this process too.
    """
    from joblib.executor import get_memmapping_executor

    start_fork_server(workers=workers)
    return get_memmapping_executor(
        workers,
        env=worker_env(workers),
        reuse=True,
        initializer=limit_threads,
        initargs=(worker_threads(workers),),
    )


def warm_up(workers: int, *, modules: Sequence[str] = ()) -> None:
    """Get the workers' imports under way now, in the background.

    Starts the fork server (it imports the fitting code and ``modules``, the job's estimators and
    steps, then waits for the executor to ask for workers) or, without one, the workers
    themselves, each importing the same. Does nothing for one worker (fits then run in this
    process). Never raises: a pool that cannot start now fails later, where the executor reports
    it.
    """
    if workers <= 1:
        return
    try:
        if start_fork_server(workers=workers, modules=modules):
            return
        pool = get_pool(workers)
        for _ in range(workers):
            pool.submit(import_fitting_code, modules)
    except Exception:  # warming up is only an optimisation
        return


def start_fork_server(*, workers: int, modules: Sequence[str] = ()) -> bool:
    """Make loky start workers from a fork server that preloads the fitting code, and start it.

    The server imports the fitting code and ``modules`` (the job's estimators and steps; see
    kubetune.worker_preload), with the workers' thread caps in its environment: BLAS and OpenMP
    then start no more threads in it than each of its ``workers`` forks may use, which also
    spares the server the CPU of BLAS threads spinning while it imports (0.2 s of 0.9).

    Returns False, changing nothing, where the platform has no fork server, loky's start method
    was already set to another, the main module is a script that a worker could not read, or
    the server cannot start. Starting an already running server does nothing.
    """
    import multiprocessing
    from multiprocessing import forkserver

    from joblib.externals.loky.backend.context import get_start_method, set_start_method

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if isinstance(main_file, str) and not os.path.isfile(main_file):
        return False  # a script read from standard input: a worker could not run it again
    method = get_start_method()
    if method not in (None, "forkserver"):
        return False
    # Read when the server starts; later calls change nothing in a running server.
    forkserver.set_forkserver_preload(preload_modules())
    try:
        # Spawns the server and returns: it imports meanwhile, in the environment set here.
        # The caps for the server's own imports count os.cpu_count(): usable_cores() would
        # import joblib (and numpy, 0.15 s) before the server starts. Each worker's initializer
        # then applies the usable cores (get_pool).
        caps = worker_env(workers, cores=os.cpu_count() or 1)
        with _environment({**caps, MODULES_ENV: ",".join(modules)}):
            forkserver.ensure_running()
    except OSError:  # e.g. a temporary directory too deep for a Unix socket's path
        return False
    if method is None:
        set_start_method("forkserver")
    return True


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block only (what a process started in it inherits)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def preload_modules() -> list[str]:
    """What the fork server imports: the fitting code, and the main module if run by name.

    A worker started by the fork server runs the main module again, as ``multiprocessing`` does
    for its spawn and forkserver methods (a script's ``if __name__ == "__main__"`` block does
    not run), except a package's ``__main__`` (``python -m kubetune.runner``). For a module run
    by name that would import all it imports in every worker; imported once in the server, it
    is already loaded there.
    """
    modules = [WORKER_PRELOAD]
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = getattr(spec, "name", None)
    if isinstance(name, str) and name != "__main__" and not name.endswith(".__main__"):
        modules.append(name)
    return modules


def limit_threads(threads: int) -> None:
    """Run by each worker as it starts: cap BLAS and OpenMP at ``threads`` threads.

    A worker forked from the fork server inherits the libraries the server loaded before any
    limit was known, so environment variables come too late for them; threadpoolctl (what
    scikit-learn uses for this) sets the limit in each loaded library. The variables are set
    too, for libraries loaded later.
    """
    os.environ.update({name: str(threads) for name in BLAS_THREAD_VARIABLES})
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)


def import_fitting_code(modules: Sequence[str] = ()) -> int:
    """Import what the first fold fit would, frozen out of the collector; return the pid.

    ``modules`` are the job's estimators and steps (kubetune.allowlist.fitting_modules); one
    that cannot be imported is skipped. The fork server's preload runs this; without a fork
    server each worker runs it as its first task (see :func:`warm_up` and
    kubetune.fold.settle_worker).
    """
    import importlib

    from kubetune.startup import collector_paused

    with collector_paused(freeze=True):
        import kubetune.fold  # noqa: F401

        for module in modules:
            # Not installed, or broken (an optional library's native code): the fits that need
            # it fail with the reason, the other models of a comparison go on.
            with suppress(Exception):
                importlib.import_module(module)
    return os.getpid()
