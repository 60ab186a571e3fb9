"""Search quality at equal numbers of fits: kubetune's methods against scikit-learn's searches.

For each task and seed, every method gets the same candidate budget on the same folds:

- kubetune grid (gridPoints chosen so the grid size is closest to the budget; reported),
- kubetune random, bayesian (TPE) and progressive (grid, random, bayesian stages),
- RandomizedSearchCV (n_iter = budget) and HalvingRandomSearchCV (n_candidates chosen so the
  candidate evaluations over its rungs are closest to the budget; its early rungs fit on
  subsamples, so its fits are cheaper; the fits it used are reported).

The score of a method is the mean CV score, on the shared full-data folds, of the configuration
it picked. HalvingRandomSearchCV scores its last rung on a subsample with other folds, so its
pick is re-scored on the shared folds (5 fits outside its budget). Reported per task and method:
the mean and std over seeds of that score, the mean rank (1 = best), the mean regret against the
best score any method found on that task and seed, and that regret normalised by the spread
between the best and the worst method (0 = best of the methods, 1 = worst).

    python bench/search_quality.py                 # 5 seeds, budget 30 candidates x 5 folds
    python bench/search_quality.py --quick         # 2 seeds, budget 12
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from scipy.stats import loguniform, randint, rankdata, uniform
from sklearn.base import clone
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.model_selection import (
    HalvingRandomSearchCV,
    KFold,
    RandomizedSearchCV,
    StratifiedKFold,
    cross_val_score,
)

from _tables import Report, code_version
from kubetune.api import TuningJob, load_resource
from kubetune.api.catalog import ESTIMATORS
from kubetune.api.parameters import Parameter
from kubetune.engine import Prepared, prepare, run_tuning_job
from kubetune.estimators import MODEL_STEP
from kubetune.planning import grid_size

FOLDS = 5
HALVING_FACTOR = 3
METHODS = [
    "kt-grid",
    "kt-random",
    "kt-bayesian",
    "kt-progressive",
    "RandomizedSearchCV",
    "HalvingRandomSearchCV",
]


@dataclass(frozen=True)
class Param:
    """A tuned parameter, written once and turned into kubetune YAML and scipy distributions."""

    name: str
    kind: str  # "float" or "int"
    low: float
    high: float
    log: bool = False
    step: int | None = None

    def kubetune(self) -> dict[str, Any]:
        bounds: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            bounds["log"] = True
        if self.step is not None:
            bounds["step"] = self.step
        return {"name": self.name, self.kind: bounds}

    def scipy(self) -> Any:
        if self.kind == "float":
            return (
                loguniform(self.low, self.high)
                if self.log
                else uniform(self.low, self.high - self.low)
            )
        low, high = int(self.low), int(self.high)
        if self.step is not None:
            return list(range(low, high + 1, self.step))
        return LogInt(low, high) if self.log else randint(low, high + 1)


class LogInt:
    """An integer drawn log-uniformly, rounded (as optuna's IntDistribution(log=True))."""

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high
        self._dist = loguniform(low - 0.5, high + 0.5)

    def rvs(self, random_state: Any = None) -> int:
        value = round(float(self._dist.rvs(random_state=random_state)))
        return min(max(value, self.low), self.high)


@dataclass(frozen=True)
class Task:
    name: str
    dataset: str
    estimator: str
    metric: str
    params: tuple[Param, ...]
    preprocessing: tuple[str, ...] = ()
    fixed: dict[str, Any] = field(default_factory=dict)


TASKS = [
    Task(
        name="digits-SVC",
        dataset="digits",
        estimator="SVC",
        metric="accuracy",
        params=(
            Param("C", "float", 1e-2, 1e3, log=True),
            Param("gamma", "float", 1e-4, 1.0, log=True),
        ),
    ),
    Task(
        name="breast_cancer-HGB",
        dataset="breast_cancer",
        estimator="HistGradientBoostingClassifier",
        metric="roc_auc",
        params=(
            Param("learning_rate", "float", 0.01, 0.3, log=True),
            Param("max_iter", "int", 20, 300, step=20),
            Param("max_leaf_nodes", "int", 4, 64, log=True),
            Param("min_samples_leaf", "int", 2, 50, log=True),
        ),
    ),
    Task(
        name="diabetes-SVR",
        dataset="diabetes",
        estimator="SVR",
        metric="r2",
        preprocessing=("StandardScaler",),
        params=(
            Param("C", "float", 1e-1, 1e4, log=True),
            Param("gamma", "float", 1e-4, 1.0, log=True),
            Param("epsilon", "float", 1e-2, 10.0, log=True),
        ),
    ),
]


# --- budgets -------------------------------------------------------------------------------------


def grid_points_for(task: Task, budget: int) -> int:
    """gridPoints whose full grid size is closest to the budget (ties: the smaller grid)."""
    dims = len(task.params)
    return min(range(2, 51), key=lambda g: (abs(g**dims - budget), g))


def grid3_size(task: Task) -> int:
    """Points of the task's 3-point grid (what a progressive grid stage can use at most)."""
    space = [Parameter.model_validate(p.kubetune()) for p in task.params]
    return grid_size(space, grid_points=3)


def progressive_stages(budget: int, *, grid_cap: int) -> list[dict[str, Any]]:
    """About 30% grid (3 points, a random subset when larger), 30% random, the rest bayesian.

    The grid stage asks for at most ``grid_cap`` points (the 3-point grid's size, see
    grid3_size): a grid stage capped above its grid evaluates only the grid, and the budget's
    remainder would go unused (digits-SVC at 60: 9 grid points of 18, 51 candidates in all).
    """
    grid = min(max(1, round(0.3 * budget)), grid_cap)
    random_ = max(1, round(0.3 * budget))
    return [
        {"method": "grid", "gridPoints": 3, "trials": grid},
        {"method": "random", "trials": random_},
        {"method": "bayesian", "trials": budget - grid - random_},
    ]


def halving_schedule(n_candidates: int, *, n_samples: int, smallest: int) -> list[int]:
    """Candidates per rung of HalvingRandomSearchCV(min_resources='exhaust', factor=3)."""
    required = 1 + math.floor(math.log(n_candidates, HALVING_FACTOR))
    min_resources = max(smallest, n_samples // HALVING_FACTOR ** (required - 1))
    possible = 1 + math.floor(math.log(n_samples // min_resources, HALVING_FACTOR))
    rungs, left = [], n_candidates
    for _ in range(min(required, possible)):
        rungs.append(left)
        left = math.ceil(left / HALVING_FACTOR)
    return rungs


def halving_candidates_for(budget: int, *, n_samples: int, smallest: int) -> int:
    """n_candidates whose evaluations over all rungs come closest to the budget."""
    return min(
        range(1, 4 * budget),
        key=lambda n: (
            abs(sum(halving_schedule(n, n_samples=n_samples, smallest=smallest)) - budget),
            n,
        ),
    )


# --- one search ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    score: float
    candidates: int
    fits: int
    wall: float
    params: dict[str, Any]
    note: str = ""


def job_document(task: Task, seed: int, search: dict[str, Any], parallelism: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TuningJob",
        "metadata": {"name": f"bench-{task.name.lower().replace('_', '-')}"},
        "spec": {
            "estimator": {"name": task.estimator, "params": dict(task.fixed)},
            "preprocessing": [{"name": p} for p in task.preprocessing],
            "dataset": {"builtin": task.dataset},
            "parameters": [p.kubetune() for p in task.params],
            "search": {**search, "parallelism": parallelism, "seed": seed},
            "cv": {"folds": FOLDS, "shuffle": True, "seed": seed},
            "scoring": {"metric": task.metric},
        },
    }


def kubetune_search(method: str, task: Task, seed: int, budget: int, parallelism: int) -> Outcome:
    if method == "grid":
        points = grid_points_for(task, budget)
        search: dict[str, Any] = {"method": "grid", "gridPoints": points}
    elif method == "progressive":
        stages = progressive_stages(budget, grid_cap=grid3_size(task))
        search = {"method": "progressive", "stages": stages}
    else:
        search = {"method": method, "trials": budget}
    job = load_resource(job_document(task, seed, search, parallelism))
    assert isinstance(job, TuningJob)
    # A prepared job of its own (5 ms): the engine swaps its data for the workers' memory map,
    # whose file is gone once the run ends, so the seed's shared one must stay untouched.
    prepared = prepare(job)
    start = time.perf_counter()
    result = run_tuning_job(job, parallelism=parallelism, prepared=prepared)
    wall = time.perf_counter() - start
    status = result.status
    if status.best is None:
        raise RuntimeError(f"{task.name} {method} seed {seed}: {status.message}")
    records = result.run.records
    note = ""
    if method == "grid":
        note = f"gridPoints {search['gridPoints']}: {len(records)} points"
    elif method == "progressive":
        note = "stages " + "+".join(
            str(s.trials.completed + s.trials.failed) for s in status.stages
        )
    return Outcome(
        score=status.best.score,
        candidates=len(records),
        fits=sum(len(r.folds) for r in records),
        wall=wall,
        params=dict(status.best.params),
        note=note,
    )


def splitter(task: Task, seed: int) -> StratifiedKFold | KFold:
    """The same folds as kubetune's engine.make_splits (checked against it in main)."""
    cls = KFold if ESTIMATORS[task.estimator] == "regression" else StratifiedKFold
    return cls(n_splits=FOLDS, shuffle=True, random_state=seed)


def release_kubetune_pool() -> None:
    """Work around an engine bug: shut down the plain loky pool kubetune leaves behind.

    kubetune's Executor creates loky's global reusable executor directly; joblib's Parallel then
    reuses that global and fails with "'_ReusablePoolExecutor' object has no attribute
    '_temp_folder_manager'". Shutting it down lets joblib make its own (memmapping) pool.
    """
    from joblib.externals.loky import reusable_executor

    pool = getattr(reusable_executor, "_executor", None)
    if pool is not None and not hasattr(pool, "_temp_folder_manager"):
        pool.shutdown(wait=True)


def sklearn_space(task: Task) -> dict[str, Any]:
    """The task's parameters as scipy distributions for the pipeline's model step."""
    return {f"{MODEL_STEP}__{p.name}": p.scipy() for p in task.params}


def sklearn_search(
    method: str,
    task: Task,
    seed: int,
    budget: int,
    parallelism: int,
    prepared: Prepared,
    pipeline: Any,
    *,
    space: Any = None,
) -> Outcome:
    """One scikit-learn search; ``space`` (default: the task's parameters) may be a list of
    dicts whose model step is itself a parameter (a model choice)."""
    release_kubetune_pool()
    X, y = prepared.data.X, prepared.data.y
    if space is None:
        space = sklearn_space(task)
    start = time.perf_counter()
    note = ""
    if method == "RandomizedSearchCV":
        search: Any = RandomizedSearchCV(
            pipeline,
            space,
            n_iter=budget,
            scoring=task.metric,
            cv=prepared.splits,
            n_jobs=parallelism,
            random_state=seed,
            refit=False,
        )
        search.fit(X, y)
        candidates = budget
        fits = budget * FOLDS
        score = float(search.best_score_)
    else:
        n_candidates = halving_candidates_for(
            budget, n_samples=len(y), smallest=smallest_resources(task, y)
        )
        search = HalvingRandomSearchCV(
            pipeline,
            space,
            n_candidates=n_candidates,
            factor=HALVING_FACTOR,
            min_resources="exhaust",
            scoring=task.metric,
            cv=splitter(task, seed),
            n_jobs=parallelism,
            random_state=seed,
            refit=False,
        )
        search.fit(X, y)
        candidates = int(sum(search.n_candidates_))
        fits = candidates * FOLDS
        note = (
            f"{n_candidates} candidates, rungs {list(search.n_candidates_)} "
            f"on {list(search.n_resources_)} rows"
        )
        score = rescore(pipeline, search.best_params_, task, prepared, parallelism)
    wall = time.perf_counter() - start
    params = {k.removeprefix(f"{MODEL_STEP}__"): v for k, v in search.best_params_.items()}
    return Outcome(
        score=score, candidates=candidates, fits=fits, wall=wall, params=params, note=note
    )


def smallest_resources(task: Task, y: np.ndarray) -> int:
    """HalvingRandomSearchCV's min_resources 'smallest': 2 x folds (x classes for classifiers)."""
    classes = 1 if ESTIMATORS[task.estimator] == "regression" else len(np.unique(y))
    return 2 * FOLDS * classes


def rescore(
    pipeline: Any, params: dict[str, Any], task: Task, prepared: Prepared, parallelism: int
) -> float:
    """The mean score of ``params`` on the shared full-data folds."""
    release_kubetune_pool()
    model = clone(pipeline).set_params(**params)
    scores = cross_val_score(
        model,
        prepared.data.X,
        prepared.data.y,
        scoring=task.metric,
        cv=prepared.splits,
        n_jobs=parallelism,
    )
    return float(np.mean(scores))


# --- the run -------------------------------------------------------------------------------------


def check_folds(task: Task, seed: int, prepared: Prepared) -> None:
    theirs = list(splitter(task, seed).split(prepared.data.X, prepared.data.y))
    same = len(theirs) == len(prepared.splits) and all(
        np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
        for a, b in zip(theirs, prepared.splits, strict=True)
    )
    if not same:
        raise RuntimeError(f"{task.name} seed {seed}: kubetune's folds differ from {theirs!r}")


def run_task(
    task: Task,
    seeds: list[int],
    budget: int,
    parallelism: int,
    methods: list[str],
    log: Callable[[str], None],
) -> dict[str, list[Outcome]]:
    outcomes: dict[str, list[Outcome]] = {m: [] for m in methods}
    for seed in seeds:
        # One prepared job per seed: the same data and folds for every method.
        base = load_resource(
            job_document(task, seed, {"method": "random", "trials": budget}, parallelism)
        )
        prepared = prepare(base)
        check_folds(task, seed, prepared)
        pipeline = run_pipeline(base, prepared)
        for method in methods:
            if method.startswith("kt-"):
                outcome = kubetune_search(
                    method.removeprefix("kt-"), task, seed, budget, parallelism
                )
            else:
                outcome = sklearn_search(
                    method, task, seed, budget, parallelism, prepared, pipeline
                )
            outcomes[method].append(outcome)
            log(
                f"  {task.name} seed {seed} {method}: {outcome.score:.5f} "
                f"({outcome.candidates} candidates, {outcome.wall:.1f} s) {outcome.note}"
            )
        # Consistency: scikit-learn scores kubetune's pick exactly as kubetune did.
        if "kt-random" in outcomes:
            picked = outcomes["kt-random"][-1]
            again = rescore(
                pipeline,
                {f"{MODEL_STEP}__{k}": v for k, v in picked.params.items()},
                task,
                prepared,
                parallelism,
            )
            if abs(again - picked.score) > 1e-9:
                raise RuntimeError(
                    f"{task.name} seed {seed}: kubetune scored {picked.score}, "
                    f"scikit-learn {again} for the same params and folds"
                )
    return outcomes


def run_pipeline(job: Any, prepared: Prepared) -> Any:
    """kubetune's own pipeline for the job (same steps, random_state and n_jobs as its fits)."""
    from kubetune.estimators import make_pipeline

    spec = job.spec
    return make_pipeline(
        estimator=spec.estimator,
        preprocessing=spec.preprocessing,
        categorical_columns=prepared.data.categorical_columns,
        seed=prepared.seed,
    )


def summarise(
    task: Task, outcomes: dict[str, list[Outcome]], seeds: list[int], report: Report
) -> dict[str, float]:
    methods = list(outcomes)
    scores = np.array([[outcomes[m][i].score for m in methods] for i in range(len(seeds))])
    ranks = np.array([rankdata(-row, method="average") for row in scores])
    best = scores.max(axis=1, keepdims=True)
    worst = scores.min(axis=1, keepdims=True)
    regret = best - scores
    spread = np.where(best - worst > 0, best - worst, 1.0)
    normalised = regret / spread
    rows = []
    mean_ranks: dict[str, float] = {}
    for j, m in enumerate(methods):
        fits = [o.fits for o in outcomes[m]]
        cands = [o.candidates for o in outcomes[m]]
        std = statistics.stdev(scores[:, j]) if len(seeds) > 1 else 0.0
        mean_ranks[m] = float(ranks[:, j].mean())
        rows.append(
            (
                m,
                f"{statistics.mean(cands):.1f}",
                f"{statistics.mean(fits):.0f}",
                f"{scores[:, j].mean():.4f} ± {std:.4f}",
                f"{mean_ranks[m]:.2f}",
                f"{regret[:, j].mean():.4f}",
                f"{normalised[:, j].mean():.2f}",
                f"{statistics.mean(o.wall for o in outcomes[m]):.1f}",
            )
        )
    report.table(
        [
            "method",
            "candidates",
            "fits",
            f"best {task.metric} mean ± std",
            "mean rank",
            "regret",
            "norm. regret",
            "wall s",
        ],
        rows,
        caption=f"{task.name} ({task.dataset}, {task.estimator} over "
        f"{', '.join(p.name for p in task.params)}; {task.metric}; seeds {seeds})",
    )
    notes = sorted({o.note for m in methods for o in outcomes[m] if o.note})
    for note in notes:
        report.line(f"  {note}")
    return mean_ranks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, help="number of seeds, 0..N-1 (default 5; quick 2)")
    parser.add_argument(
        "--budget", type=int, help="candidates per search (default 30; quick 12); x folds = fits"
    )
    parser.add_argument("--parallelism", type=int, default=2, help="workers (default 2)")
    parser.add_argument("--quick", action="store_true", help="2 seeds and a budget of 12")
    parser.add_argument(
        "--tasks", nargs="+", choices=[t.name for t in TASKS], help="only these tasks (default all)"
    )
    parser.add_argument("--methods", nargs="+", choices=METHODS, help="only these methods")
    parser.add_argument("--markdown", type=Path, help="also write the report as markdown here")
    args = parser.parse_args(argv)
    seeds = list(range(args.seeds or (2 if args.quick else 5)))
    budget = args.budget or (12 if args.quick else 30)
    tasks = [t for t in TASKS if not args.tasks or t.name in args.tasks]
    methods = [m for m in METHODS if not args.methods or m in args.methods]
    os.environ.setdefault("PYTHONWARNINGS", "ignore")  # worker processes inherit it
    warnings.simplefilter("ignore")

    report = Report("Search quality at equal numbers of fits")
    report.line(
        f"budget {budget} candidates x {FOLDS} folds = {budget * FOLDS} fits per search; "
        f"seeds {seeds}; parallelism {args.parallelism}; same folds for every method per seed"
    )
    report.line(
        f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, scikit-learn "
        f"{sklearn.__version__}, kubetune at {code_version()}, "
        f"load average at start {os.getloadavg()[0]:.2f}"
    )
    report.line(
        "score = CV score on the shared full-data folds of the configuration each method "
        "picked (HalvingRandomSearchCV's pick re-scored on them); regret = best of the methods "
        "minus the method's score; norm. regret = regret / (best - worst method), 0 best, 1 worst"
    )
    started = time.perf_counter()
    all_ranks: dict[str, dict[str, float]] = {}
    for task in tasks:
        outcomes = run_task(
            task,
            seeds,
            budget,
            args.parallelism,
            methods,
            lambda text: print(text, file=sys.stderr, flush=True),
        )
        all_ranks[task.name] = summarise(task, outcomes, seeds, report)
    if len(tasks) > 1:
        rows = [
            (
                m,
                *(f"{all_ranks[t.name][m]:.2f}" for t in tasks),
                f"{statistics.mean(all_ranks[t.name][m] for t in tasks):.2f}",
            )
            for m in methods
        ]
        report.table(
            ["method", *(t.name for t in tasks), "all tasks"],
            rows,
            caption="Mean rank per task (1 = best)",
        )
    report.line("")
    report.line(
        f"total wall time {time.perf_counter() - started:.0f} s; "
        f"load average at end {os.getloadavg()[0]:.2f}"
    )
    if args.markdown:
        report.write_markdown(args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
