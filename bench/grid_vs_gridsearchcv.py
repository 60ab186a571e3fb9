"""kubetune's grid search against scikit-learn's GridSearchCV: same 24 candidates, same 5 folds.

digits with SVC over C (6 log-spaced values) x gamma (4 log-spaced values). Each run is a fresh
process, timed from start to exit: ``kubetune run JOB.yaml -q --no-model`` through the console
script, and a small ``python -c`` program that fits GridSearchCV with the same candidates, the
same StratifiedKFold, ``n_jobs`` equal to kubetune's parallelism and ``refit=False`` (kubetune
runs with ``--no-model``, so neither refits the best model). Runs alternate (kubetune,
GridSearchCV, kubetune, ...) so that drift in the machine's load hits both alike.

The script also checks that both searches scored every candidate the same, on the same folds,
and found the same best parameters and score.

    python bench/grid_vs_gridsearchcv.py --repeats 5 --parallelism 2 --markdown grid.md
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from sklearn.datasets import load_digits
from sklearn.model_selection import StratifiedKFold

from _tables import Report, code_version
from kubetune.api import load_resource
from kubetune.engine import make_splits, prepare

TARGET_RATIO = 1.10
C_VALUES = [10.0**k for k in range(-2, 4)]  # 0.01 .. 1000, 6 values
GAMMA_VALUES = [10.0**k for k in range(-4, 0)]  # 0.0001 .. 0.1, 4 values
FOLDS = 5

# The GridSearchCV side, run as `python -c CHILD CONFIG_JSON`. It prints one JSON line.
CHILD = """
import hashlib, json, sys
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.svm import SVC

config = json.loads(sys.argv[1])
X, y = load_digits(return_X_y=True)
cv = StratifiedKFold(n_splits=config["folds"], shuffle=True, random_state=config["seed"])
digest = hashlib.sha256()
for train, test in cv.split(X, y):
    digest.update(train.astype("int64").tobytes())
    digest.update(test.astype("int64").tobytes())
search = GridSearchCV(
    SVC(), config["grid"], cv=cv, n_jobs=config["n_jobs"], scoring="accuracy", refit=False
)
search.fit(X, y)
rows = [
    {"params": p, "score": float(s)}
    for p, s in zip(search.cv_results_["params"], search.cv_results_["mean_test_score"])
]
print(json.dumps({
    "best_params": search.best_params_,
    "best_score": float(search.best_score_),
    "splits_sha256": digest.hexdigest(),
    "rows": rows,
}))
"""


def job_document(*, seed: int, parallelism: int) -> dict[str, Any]:
    """The TuningJob: a grid over exactly GridSearchCV's values, given as categorical lists."""
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TuningJob",
        "metadata": {"name": "bench-grid-svc-digits"},
        "spec": {
            "estimator": {"name": "SVC"},
            "dataset": {"builtin": "digits"},
            "parameters": [
                {"name": "C", "categorical": C_VALUES},
                {"name": "gamma", "categorical": GAMMA_VALUES},
            ],
            "search": {"method": "grid", "parallelism": parallelism, "seed": seed},
            "cv": {"folds": FOLDS, "shuffle": True, "seed": seed},
            "scoring": {"metric": "accuracy"},
        },
    }


def splits_digest(splits: list[tuple[np.ndarray, np.ndarray]]) -> str:
    digest = hashlib.sha256()
    for train, test in splits:
        digest.update(np.asarray(train, dtype=np.int64).tobytes())
        digest.update(np.asarray(test, dtype=np.int64).tobytes())
    return digest.hexdigest()


def check_splits(document: dict[str, Any], seed: int) -> tuple[str, list[str]]:
    """kubetune's folds (as `kubetune run` makes them) against GridSearchCV's StratifiedKFold."""
    job = load_resource(document)
    prepared = prepare(job)
    problems: list[str] = []
    X, y = load_digits(return_X_y=True)
    if not np.array_equal(prepared.data.y, y) or not np.array_equal(prepared.data.X, X):
        problems.append("kubetune's builtin digits differ from sklearn.datasets.load_digits")
    sk = list(StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=seed).split(X, y))
    # Mirror of engine.make_splits, called directly as well.
    mirror = make_splits(cv=job.spec.cv, task="classification", y=y, seed=seed)
    for name, splits in (("prepare()", prepared.splits), ("make_splits()", mirror)):
        if len(splits) != len(sk) or not all(
            np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
            for a, b in zip(splits, sk, strict=True)
        ):
            problems.append(f"kubetune {name} folds differ from StratifiedKFold")
    return splits_digest(prepared.splits), problems


def console_script() -> str:
    """The `kubetune` console script next to this interpreter (not a pyenv shim)."""
    beside = Path(sys.executable).parent / "kubetune"
    if beside.exists():
        return str(beside)
    found = shutil.which("kubetune")
    if found is None:
        sys.exit("kubetune console script not found: pip install -e . first")
    return found


def timed(command: list[str]) -> tuple[float, float, str]:
    """Wall time, CPU time (user+sys of the process and all its descendants) and stdout."""
    reaps_orphans = _adopt_orphans()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if reaps_orphans:
        _reap_orphans()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        sys.exit(f"command failed ({done.returncode}): {' '.join(command)}\n{done.stderr}")
    return wall, cpu, done.stdout


def _adopt_orphans() -> bool:
    """Make this process the Linux child subreaper of what it runs, if it can.

    RUSAGE_CHILDREN counts a process only once its parent has waited for it. kubetune's workers
    are children of its fork server, which exits after the main process does: an orphan, it
    would be reaped by init and its CPU (with its workers') lost. As subreaper, this process
    adopts and reaps it.
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    pr_set_child_subreaper = 36
    return bool(ctypes.CDLL(None).prctl(pr_set_child_subreaper, 1, 0, 0, 0) == 0)


def _reap_orphans(timeout: float = 30.0) -> None:
    # Wait for adopted descendants to exit (within seconds of the main process); nothing else
    # of this process's runs while a command is timed.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # none left
        if pid == 0:
            time.sleep(0.005)


def run_kubetune(script: str, job_file: Path, out: Path) -> tuple[float, float, dict[str, Any]]:
    shutil.rmtree(out, ignore_errors=True)
    wall, cpu, _ = timed([script, "run", str(job_file), "-o", str(out), "--no-model", "-q"])
    status = yaml.safe_load((out / "status.yaml").read_text())["status"]
    with (out / "trials.csv").open() as handle:
        rows = [
            {
                "params": {"C": float(r["param_C"]), "gamma": float(r["param_gamma"])},
                "score": float(r["mean_test_accuracy"]),
            }
            for r in csv.DictReader(handle)
        ]
    result = {
        "best_params": status["best"]["params"],
        "best_score": status["best"]["score"],
        "cv_seed": status["reproducibility"]["cv"]["seed"],
        "rows": rows,
    }
    return wall, cpu, result


def run_gridsearch(config: dict[str, Any]) -> tuple[float, float, dict[str, Any]]:
    wall, cpu, stdout = timed([sys.executable, "-c", CHILD, json.dumps(config)])
    return wall, cpu, json.loads(stdout.strip().splitlines()[-1])


def key(params: dict[str, Any]) -> tuple[float, float]:
    return float(params["C"]), float(params["gamma"])


def compare(kt: dict[str, Any], sk: dict[str, Any]) -> tuple[float, list[str]]:
    """Largest difference of any candidate's mean score; problems found."""
    problems: list[str] = []
    kt_scores = {key(r["params"]): r["score"] for r in kt["rows"]}
    sk_scores = {key(r["params"]): r["score"] for r in sk["rows"]}
    if set(kt_scores) != set(sk_scores):
        problems.append(
            f"candidate sets differ: kubetune {len(kt_scores)}, GridSearchCV {len(sk_scores)}"
        )
        return float("nan"), problems
    diff = max(abs(kt_scores[k] - sk_scores[k]) for k in kt_scores)
    if diff > 1e-12:
        problems.append(f"a candidate's mean score differs by {diff:.3g}")
    if abs(kt["best_score"] - sk["best_score"]) > 1e-12:
        problems.append("best scores differ")
    if key(kt["best_params"]) != key(sk["best_params"]):
        tied = abs(sk_scores[key(kt["best_params"])] - sk["best_score"]) <= 1e-12
        why = " (a tie: both score the best mean; ties break in another order)" if tied else ""
        problems.append(f"best params differ{why}")
    return diff, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each (default 5)")
    parser.add_argument(
        "--parallelism",
        type=int,
        default=2,
        help="kubetune parallelism = GridSearchCV n_jobs (default 2)",
    )
    parser.add_argument("--seed", type=int, default=0, help="search and fold seed (default 0)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="untimed runs of each first, to warm file caches (default 1)",
    )
    parser.add_argument("--markdown", type=Path, help="also write the report as markdown here")
    args = parser.parse_args(argv)

    report = Report("kubetune grid vs GridSearchCV")
    document = job_document(seed=args.seed, parallelism=args.parallelism)
    grid = {"C": C_VALUES, "gamma": GAMMA_VALUES}
    config = {"grid": grid, "folds": FOLDS, "seed": args.seed, "n_jobs": args.parallelism}
    script = console_script()
    version = code_version()
    kt_digest, split_problems = check_splits(document, args.seed)

    report.line(
        f"task: digits (1797 x 64), SVC, {len(C_VALUES)} C x {len(GAMMA_VALUES)} gamma = "
        f"{len(C_VALUES) * len(GAMMA_VALUES)} candidates x {FOLDS} folds "
        f"= {len(C_VALUES) * len(GAMMA_VALUES) * FOLDS} fits"
    )
    report.line(f"C = {C_VALUES}; gamma = {GAMMA_VALUES}")
    report.line(
        f"kubetune: `{Path(script).name} run job.yaml -o DIR --no-model -q`, "
        f"search.parallelism {args.parallelism}; GridSearchCV: n_jobs {args.parallelism}, "
        "refit=False (as --no-model), "
        f"StratifiedKFold({FOLDS}, shuffle=True, random_state={args.seed})"
    )
    report.line(
        f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"kubetune at {version}, load average at start {os.getloadavg()[0]:.2f}"
    )
    report.line(
        f"repeats {args.repeats} (alternating, each a fresh process), warm-up {args.warmup}"
    )

    walls: dict[str, list[float]] = {"kubetune": [], "GridSearchCV": []}
    cpus: dict[str, list[float]] = {"kubetune": [], "GridSearchCV": []}
    results: list[tuple[dict[str, Any], dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="kubetune-bench-") as tmp:
        job_file = Path(tmp) / "job.yaml"
        job_file.write_text(yaml.safe_dump(document, sort_keys=False))
        out = Path(tmp) / "out"
        for _ in range(args.warmup):
            run_kubetune(script, job_file, out)
            run_gridsearch(config)
        for i in range(args.repeats):
            kt_wall, kt_cpu, kt = run_kubetune(script, job_file, out)
            sk_wall, sk_cpu, sk = run_gridsearch(config)
            walls["kubetune"].append(kt_wall)
            walls["GridSearchCV"].append(sk_wall)
            cpus["kubetune"].append(kt_cpu)
            cpus["GridSearchCV"].append(sk_cpu)
            results.append((kt, sk))
            print(
                f"  run {i + 1}: kubetune {kt_wall:.2f} s, GridSearchCV {sk_wall:.2f} s",
                file=sys.stderr,
                flush=True,
            )

    ratios = [k / s for k, s in zip(walls["kubetune"], walls["GridSearchCV"], strict=True)]
    cpu_ratios = [k / s for k, s in zip(cpus["kubetune"], cpus["GridSearchCV"], strict=True)]
    rows: list[tuple[object, ...]] = [
        (i + 1, f"{kw:.2f}", f"{sw:.2f}", f"{r:.3f}", f"{kc:.2f}", f"{sc:.2f}", f"{cr:.3f}")
        for i, (kw, sw, r, kc, sc, cr) in enumerate(
            zip(
                walls["kubetune"],
                walls["GridSearchCV"],
                ratios,
                cpus["kubetune"],
                cpus["GridSearchCV"],
                cpu_ratios,
                strict=True,
            )
        )
    ]
    rows.append(
        (
            "median",
            f"{statistics.median(walls['kubetune']):.2f}",
            f"{statistics.median(walls['GridSearchCV']):.2f}",
            f"{statistics.median(ratios):.3f}",
            f"{statistics.median(cpus['kubetune']):.2f}",
            f"{statistics.median(cpus['GridSearchCV']):.2f}",
            f"{statistics.median(cpu_ratios):.3f}",
        )
    )
    report.table(
        [
            "run",
            "kubetune wall s",
            "GridSearchCV wall s",
            "ratio",
            "kubetune CPU s",
            "GridSearchCV CPU s",
            "CPU ratio",
        ],
        rows,
        caption="Whole-process times (CPU = user+sys of the process and its workers)",
    )

    kt, sk = results[-1]
    report.table(
        ["", "best C", "best gamma", "best mean accuracy", "fold seed"],
        [
            (
                "kubetune",
                kt["best_params"]["C"],
                kt["best_params"]["gamma"],
                f"{kt['best_score']:.6f}",
                kt["cv_seed"],
            ),
            (
                "GridSearchCV",
                sk["best_params"]["C"],
                sk["best_params"]["gamma"],
                f"{sk['best_score']:.6f}",
                args.seed,
            ),
        ],
        caption="Best candidate (last run)",
    )
    problems = list(split_problems)
    diffs = []
    for kt, sk in results:
        diff, found = compare(kt, sk)
        diffs.append(diff)
        problems += [p for p in found if p not in problems]
        if sk["splits_sha256"] != kt_digest and "fold digests differ" not in problems:
            problems.append("fold digests differ")
    report.line("")
    report.line(
        f"folds: kubetune prepare() = engine.make_splits = StratifiedKFold({FOLDS}, shuffle=True, "
        f"random_state={args.seed}) in this process: {'yes' if not split_problems else 'NO'}; "
        f"sha256 of kubetune's folds {kt_digest[:16]}, of GridSearchCV's {sk['splits_sha256'][:16]}"
    )
    report.line(
        f"scores: largest difference of a candidate's mean accuracy over all runs "
        f"{max(diffs):.3g}; same best params and score: "
        f"{'yes' if not problems else 'NO: ' + '; '.join(problems)}"
    )
    median_ratio = statistics.median(ratios)
    verdict = "met" if median_ratio <= TARGET_RATIO else "NOT met"
    report.line(
        f"median wall-time ratio kubetune/GridSearchCV: {median_ratio:.3f} "
        f"(ratio of medians {statistics.median(walls['kubetune']) / statistics.median(walls['GridSearchCV']):.3f}); "  # noqa: E501
        f"target: at most {TARGET_RATIO:.2f} on 2 cores: {verdict}"
    )
    report.line(f"load average at end {os.getloadavg()[0]:.2f}")
    if code_version() != version:
        report.line(f"WARNING: kubetune changed during the run ({version} -> {code_version()})")
    if args.markdown:
        report.write_markdown(args.markdown)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
