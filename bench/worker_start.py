"""When the workers are ready at parallelism 2: forks of kubetune's fork server, or loky's.

Two start-up sequences, each in a fresh process timed from its launch, until both workers have
answered a first task that imports what a first SVC fit imports (the fitting code and
scikit-learn's SVM module, which the fork server imports beforehand for an SVC job):

- ``run``: what ``kubetune run`` does: start the workers as soon as the YAML is read
  (``kubetune.pool.warm_up``), then import the engine, then ask for the pool.
- ``runner``: what a stage Job's ``python -m kubetune.runner`` does now: start the workers,
  import the stage code (engine, optuna, Kubernetes client), ask for the pool. Its ``loky``
  variant is the runner before the fork server: no warm-up, the stage code first, then loky's
  workers, each importing on its first task.

``forkserver`` is kubetune's default; ``loky`` sets loky's start method first, which kubetune
then leaves as it is (``kubetune.pool.start_fork_server``): the workers start as before the fork
server. The variants alternate, ``--repeats`` times; medians and ratios are printed.

    python bench/worker_start.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

WORKERS = 2


def first_task() -> float:
    # A worker's first task: what the first SVC fit would import; answers when it is done.
    import sklearn.svm  # noqa: F401

    import kubetune.fold  # noqa: F401

    return time.time()


def child(sequence: str, method: str) -> dict[str, float]:
    launched = float(os.environ["WORKER_START_T0"])
    from kubetune import pool

    if method == "loky":
        from joblib.externals.loky.backend.context import set_start_method

        set_start_method("loky")
    if sequence == "run" or method == "forkserver":
        pool.warm_up(WORKERS, modules=["sklearn.svm"])  # the job's model, named by the YAML
    from kubetune.startup import collector_paused

    with collector_paused():
        if sequence == "run":
            import kubetune.engine
        else:
            import kubetune.runner.stage  # noqa: F401
    imported = time.time()
    executor = pool.get_pool(WORKERS)
    ready = sorted(f.result() for f in [executor.submit(first_task) for _ in range(WORKERS)])
    return {"imported": imported - launched, "ready": ready[-1] - launched}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    variants = [(s, m) for s in ("run", "runner") for m in ("loky", "forkserver")]
    runs: dict[tuple[str, str], list[dict[str, float]]] = {v: [] for v in variants}
    for _ in range(args.repeats):
        for sequence, method in variants:
            env = {**os.environ, "WORKER_START_T0": repr(time.time())}
            done = subprocess.run(
                [sys.executable, str(Path(__file__)), "--child", sequence, method],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            runs[(sequence, method)].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"workers ready at parallelism {WORKERS}, s from launch (median of {args.repeats})")
    print(f"{'sequence':<8} {'loky':>6} {'forkserver':>10} {'ratio':>6}   main's imports done")
    for sequence in ("run", "runner"):
        loky, fork = (
            statistics.median(r["ready"] for r in runs[(sequence, m)])
            for m in ("loky", "forkserver")
        )
        imported = " / ".join(
            f"{statistics.median(r['imported'] for r in runs[(sequence, m)]):.2f}"
            for m in ("loky", "forkserver")
        )
        print(f"{sequence:<8} {loky:>6.2f} {fork:>10.2f} {fork / loky:>6.2f}   {imported}")


def _child_main(argv: list[str]) -> Any:
    result = child(argv[0], argv[1])
    print(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child_main(sys.argv[2:])
    else:
        main()
