"""Search quality as normalised regret (issue 7, item 3), on search_quality.py's tasks.

Per task, the folds are fixed (5 folds, shuffled, seed 0) for every method and every seed; the
seed changes only the searches. For each seed, budgets 30 and 60 candidates:

- kubetune random and bayesian, RandomizedSearchCV and plain optuna TPE run once with 60
  candidates; their score at 30 is the best of their first 30 trials (by trial number). For
  random sampling this is a 30-candidate run; for TPE it is too up to the parallel asks.
- kubetune progressive and HalvingRandomSearchCV depend on the budget: one run per budget
  (search_quality.py's stage split and rung schedule).

Reference: the best CV score of a 200-trial plain optuna TPE run on the same folds (seed 10000);
baseline: the median CV score of 50 random configurations (RandomizedSearchCV, seed 10001). Both
are cached in bench/out/ (delete to recompute). Normalised regret = (reference - best) /
(reference - baseline): 0 reaches the reference, 1 is a typical random configuration, negative
beats the reference.

    python bench/quality.py [--seeds 3] [--tasks ...] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from scipy.stats import rankdata
from sklearn.base import clone
from sklearn.model_selection import RandomizedSearchCV, cross_val_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tables import Report
from kubetune.api import load_resource
from kubetune.engine import Prepared, prepare, run_tuning_job
from kubetune.estimators import MODEL_STEP
from search_quality import (
    TASKS,
    Param,
    Task,
    job_document,
    progressive_stages,
    release_kubetune_pool,
    run_pipeline,
    sklearn_search,
)

FOLD_SEED = 0
BUDGETS = (30, 60)
REFERENCE_TRIALS = 200
BASELINE_CONFIGS = 50
GOAL_REGRET = 0.05
OUT = Path(__file__).resolve().parent / "out"
METHODS = [
    "kt-random",
    "kt-bayesian",
    "kt-progressive",
    "RandomizedSearchCV",
    "HalvingRandomSearchCV",
    "optuna-TPE",
]


def document(task: Task, seed: int, search: dict[str, Any], parallelism: int) -> dict[str, Any]:
    doc = job_document(task, seed, search, parallelism)
    doc["spec"]["cv"]["seed"] = FOLD_SEED
    return doc


def prepared_for(task: Task, seed: int, parallelism: int) -> tuple[Any, Prepared]:
    job = load_resource(document(task, seed, {"method": "random", "trials": 1}, parallelism))
    return job, prepare(job)


def kt_scores(method: str, task: Task, seed: int, budget: int, parallelism: int) -> list[float]:
    """Mean CV scores of the trials, in trial-number order."""
    if method == "progressive":
        search: dict[str, Any] = {
            "method": "progressive",
            "stages": progressive_stages(task, budget),
        }
    else:
        search = {"method": method, "trials": budget}
    job = load_resource(document(task, seed, search, parallelism))
    prepared = prepare(job)
    result = run_tuning_job(job, parallelism=parallelism, prepared=prepared)
    metric = result.run.metric
    records = sorted(result.run.records, key=lambda r: r.number)
    return [r.mean(metric) if r.ok else float("-inf") for r in records]


def suggest(trial: optuna.Trial, p: Param) -> Any:
    if p.kind == "float":
        return trial.suggest_float(p.name, p.low, p.high, log=p.log)
    return trial.suggest_int(p.name, int(p.low), int(p.high), step=p.step or 1, log=p.log)


def optuna_scores(
    task: Task, seed: int, trials: int, parallelism: int, prepared: Prepared, pipeline: Any
) -> list[float]:
    release_kubetune_pool()
    X, y = prepared.data.X, prepared.data.y

    def objective(trial: optuna.Trial) -> float:
        params = {f"{MODEL_STEP}__{p.name}": suggest(trial, p) for p in task.params}
        model = clone(pipeline).set_params(**params)
        scores = cross_val_score(
            model, X, y, scoring=task.metric, cv=prepared.splits, n_jobs=parallelism
        )
        return float(np.mean(scores))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    return [t.value for t in study.trials]


def randomized_scores(
    task: Task, seed: int, n: int, parallelism: int, prepared: Prepared, pipeline: Any
) -> list[float]:
    release_kubetune_pool()
    space = {f"{MODEL_STEP}__{p.name}": p.scipy() for p in task.params}
    search = RandomizedSearchCV(
        pipeline,
        space,
        n_iter=n,
        scoring=task.metric,
        cv=prepared.splits,
        n_jobs=parallelism,
        random_state=seed,
        refit=False,
    )
    search.fit(prepared.data.X, prepared.data.y)
    scores = search.cv_results_["mean_test_score"]
    return [float(s) if np.isfinite(s) else float("-inf") for s in scores]


def reference_and_baseline(task: Task, parallelism: int, log: Any) -> dict[str, float]:
    path = OUT / f"reference-{task.name}-folds{FOLD_SEED}.json"
    if path.exists():
        return json.loads(path.read_text())
    job, prepared = prepared_for(task, 0, parallelism)
    pipeline = run_pipeline(job, prepared)
    start = time.perf_counter()
    ref = optuna_scores(task, 10_000, REFERENCE_TRIALS, parallelism, prepared, pipeline)
    rnd = randomized_scores(task, 10_001, BASELINE_CONFIGS, parallelism, prepared, pipeline)
    finite = [s for s in rnd if np.isfinite(s)]
    value = {
        "reference": max(ref),
        "reference_trial": int(np.argmax(ref)),
        "baseline": float(statistics.median(finite)),
        "seconds": time.perf_counter() - start,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2))
    log(f"  {task.name}: reference {value['reference']:.5f}, baseline {value['baseline']:.5f}")
    return value


def run_seed(
    task: Task, seed: int, parallelism: int, methods: list[str]
) -> dict[tuple[str, int], float]:
    """Best score per (method, budget)."""
    job, prepared = prepared_for(task, seed, parallelism)
    pipeline = run_pipeline(job, prepared)
    top = max(BUDGETS)
    best: dict[tuple[str, int], float] = {}

    def prefixes(method: str, scores: list[float]) -> None:
        for b in BUDGETS:
            best[(method, b)] = max(scores[:b])

    for method in methods:
        if method in ("kt-random", "kt-bayesian"):
            prefixes(method, kt_scores(method[3:], task, seed, top, parallelism))
        elif method == "RandomizedSearchCV":
            prefixes(method, randomized_scores(task, seed, top, parallelism, prepared, pipeline))
        elif method == "optuna-TPE":
            prefixes(method, optuna_scores(task, seed, top, parallelism, prepared, pipeline))
        elif method == "kt-progressive":
            for b in BUDGETS:
                best[(method, b)] = max(kt_scores("progressive", task, seed, b, parallelism))
        elif method == "HalvingRandomSearchCV":
            for b in BUDGETS:
                out = sklearn_search(method, task, seed, b, parallelism, prepared, pipeline)
                best[(method, b)] = out.score
    return best


def run_all(
    *, seeds: int, parallelism: int, task_names: list[str] | None, log: Any
) -> dict[str, Any]:
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    warnings.simplefilter("ignore")
    results: dict[str, Any] = {}
    for task in TASKS:
        if task_names and task.name not in task_names:
            continue
        rb = reference_and_baseline(task, parallelism, log)
        per_seed = []
        for seed in range(seeds):
            start = time.perf_counter()
            per_seed.append(run_seed(task, seed, parallelism, METHODS))
            log(f"  {task.name} seed {seed}: {time.perf_counter() - start:.0f} s")
        results[task.name] = {"task": task, "rb": rb, "per_seed": per_seed}
    return results


def report(results: dict[str, Any], rep: Report, seeds: int) -> list[dict[str, Any]]:
    goals: list[dict[str, Any]] = []
    all_ranks: dict[int, dict[str, list[float]]] = {b: {m: [] for m in METHODS} for b in BUDGETS}
    regret_at: dict[tuple[str, str, int], float] = {}
    for name, r in results.items():
        ref, base = r["rb"]["reference"], r["rb"]["baseline"]
        rows = []
        for b in BUDGETS:
            scores = np.array([[s[(m, b)] for m in METHODS] for s in r["per_seed"]])
            ranks = np.array([rankdata(-row, method="average") for row in scores])
            norm = (ref - scores) / (ref - base)
            for j, m in enumerate(METHODS):
                all_ranks[b][m].append(float(ranks[:, j].mean()))
                regret_at[(name, m, b)] = float(norm[:, j].mean())
                rows.append(
                    (
                        b,
                        m,
                        f"{scores[:, j].mean():.4f}",
                        f"{norm[:, j].mean():.3f}",
                        f"{norm[:, j].max():.3f}",
                        f"{ranks[:, j].mean():.2f}",
                    )
                )
        task = r["task"]
        rep.table(
            [
                "budget",
                "method",
                f"mean best {task.metric}",
                "mean norm. regret",
                "worst seed",
                "mean rank",
            ],
            rows,
            caption=f"Item 3, {name} ({task.estimator} over "
            f"{', '.join(p.name for p in task.params)}; {task.metric}); reference "
            f"{ref:.4f} (200-trial TPE), baseline {base:.4f} (median of 50 random configs); "
            f"{seeds} seeds",
        )
    names = list(results)
    for m in ("kt-progressive", "kt-bayesian"):
        worst = max(regret_at[(n, m, 30)] for n in names)
        goals.append(
            {
                "item": "3",
                "goal": f"{m}: mean normalised regret <= {GOAL_REGRET} at 30 candidates "
                "(<= 50 trials) on every task",
                "figure": ", ".join(f"{n} {regret_at[(n, m, 30)]:.3f}" for n in names),
                "held": worst <= GOAL_REGRET,
            }
        )
    rows = []
    for b in BUDGETS:
        means = {m: statistics.mean(all_ranks[b][m]) for m in METHODS}
        order = sorted(METHODS, key=lambda m: means[m])
        for m in METHODS:
            rows.append((b, m, *(f"{x:.2f}" for x in all_ranks[b][m]), f"{means[m]:.2f}"))
        kt_best = min(means["kt-progressive"], means["kt-bayesian"])
        goals.append(
            {
                "item": "3",
                "goal": f"best mean rank at {b} candidates is kubetune progressive or bayesian",
                "figure": f"best {order[0]} {means[order[0]]:.2f}; progressive "
                f"{means['kt-progressive']:.2f}, bayesian {means['kt-bayesian']:.2f}",
                "held": kt_best <= means[order[0]] + 1e-12,
            }
        )
    rep.table(
        ["budget", "method", *names, "all tasks"],
        rows,
        caption="Item 3, mean rank at equal numbers of candidates (1 = best of the 6 methods)",
    )
    return goals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--tasks", nargs="+", choices=[t.name for t in TASKS])
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    rep = Report("Search quality")
    results = run_all(
        seeds=args.seeds,
        parallelism=args.parallelism,
        task_names=args.tasks,
        log=lambda s: print(s, file=sys.stderr, flush=True),
    )
    for g in report(results, rep, args.seeds):
        rep.line(f"{g['goal']}: {g['figure']} -> {'held' if g['held'] else 'missed'}")
    if args.markdown:
        rep.write_markdown(args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
