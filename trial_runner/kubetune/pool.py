"""The worker processes: joblib's reusable pool, and starting it before it is needed.

Kept light (no scikit-learn or optuna here): ``kubetune run`` calls :func:`warm_up` as soon as
it has read the YAML, so that the workers start and import scikit-learn while the main process
is still importing the engine and loading the data. The executor later asks for the same pool
and gets these warm workers.
"""

from __future__ import annotations

import os
from typing import Any

BLAS_THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
)


def worker_env(workers: int) -> dict[str, str]:
    """Thread limits for each worker, as joblib sets them: the cores split between workers.

    Without them BLAS and OpenMP inside each fit would start a thread per core in every worker
    and oversubscribe the machine.
    """
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    return {name: threads for name in BLAS_THREAD_VARIABLES}


def get_pool(workers: int) -> Any:
    """joblib's reusable process pool with ``workers`` workers (the one ``Parallel`` uses).

    The same arguments give back the same pool, already started, so the executor reuses what
    :func:`warm_up` began; scikit-learn's own ``n_jobs`` keeps working in this process too.
    """
    from joblib.executor import get_memmapping_executor

    return get_memmapping_executor(workers, env=worker_env(workers), reuse=True)


def warm_up(workers: int) -> None:
    """Start the worker processes now and have each import the fitting code in the background.

    Does nothing for one worker (fits then run in this process). Never raises: a pool that
    cannot start now fails later, where the executor reports it.
    """
    if workers <= 1:
        return
    try:
        pool = get_pool(workers)
        for _ in range(workers):
            pool.submit(_import_fitting_code)
    except Exception:  # warming up is only an optimisation
        return


def _import_fitting_code() -> int:
    # Runs in a worker: what the first fold fit would import, paid while the parent works, then
    # frozen out of the collector (see kubetune.fold.settle_worker).
    from kubetune.startup import collector_paused

    with collector_paused(freeze=True):
        import kubetune.fold  # noqa: F401
    return os.getpid()
