"""The stage Job's command, ``python -m kubetune.runner``: see :mod:`kubetune.runner.stage`.

The stage's workers are forked from a fork server that imports scikit-learn (kubetune.pool).
Started before the stage code is imported (the engine, the Kubernetes client, optuna), the
server imports side by side with this process instead of after it. Run as a package's
``__main__``, this module is also one that multiprocessing does not run again in each worker.
"""

from __future__ import annotations

import gc
import json
import os
import sys

from kubetune.allowlist import fitting_modules
from kubetune.pool import warm_up
from kubetune.runner import TASK_ENV
from kubetune.startup import collector_paused


def declared_task() -> tuple[int, list[str]]:
    """The task's parallelism and its estimator and step modules, read before validation only
    to start the workers early.

    Anything odd counts as one worker (none started now); the stage reports the problem.
    """
    try:
        task = json.loads(os.environ.get(TASK_ENV) or "null")
        value = task["plan"]["parallelism"]
    except (ValueError, TypeError, KeyError):
        return 1, []
    if not (isinstance(value, int) and 1 <= value <= 256):
        return 1, []
    return value, fitting_modules(task.get("spec"))


def run() -> int:
    workers, modules = declared_task()
    warm_up(workers, modules=modules)
    with collector_paused():  # see kubetune.startup
        from kubetune.runner.stage import main
    return main()


if __name__ == "__main__":
    code = run()
    gc.freeze()  # exit without the final collection over everything imported (see cli.console)
    sys.exit(code)
