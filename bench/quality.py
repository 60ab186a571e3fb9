"""Search quality as normalised regret (issue 7, item 3), on search_quality.py's tasks.

Tasks: digits-SVC and breast_cancer-HGB from search_quality.py, and diabetes-model-choice: SVR
(C, gamma, epsilon) against Ridge (alpha) and ElasticNet (alpha, l1_ratio), all after a
StandardScaler, r2. For that model choice kubetune runs one ModelComparison whose search block
(shared by every model) gets an equal share of the budget per model (30 -> 10 + 10 + 10,
48 -> 16 + 16 + 16, 60 -> 20 + 20 + 20); its best is the best trial of any model.
RandomizedSearchCV and HalvingRandomSearchCV search a pipeline whose model step is itself a
parameter (a list of param_distributions dicts, one per model, each drawn with equal
probability); optuna TPE suggests the model, then that model's parameters (a conditional space).

Per task, the folds are fixed (5 folds, shuffled, seed 0) for every method and every seed; the
seed changes only the searches. For each seed, budgets 30, 48 and 60 candidates: the issue ranks
the methods at 30 and 60, and asks for the regret goal "with at most 50 trials", which is 48
here (the largest budget of at most 50 that splits evenly over the model choice's 3 models).

- kubetune random, RandomizedSearchCV and plain optuna TPE run once with 60 candidates; their
  score at 30 (48) is the best of their first 30 (48) trials (by trial number; for a
  ModelComparison, the first 10 (16) of each model: its models run side by side, and a random
  candidate depends only on the seed and its number within its model). Plain TPE does not depend
  on the budget, so its first 30 trials are a 30-trial run.
- kubetune bayesian, with its default sampler (TPE, kt-bayesian) and with ``sampler: gp``
  (optuna's GP, kt-bayesian-gp), does the same on a single-model task, though it starts with
  max(2, min(10, budget // 4)) Sobol points: the first 30 trials of a 60-trial run start with
  10, a 30-trial run with 7 (48 and 60 both start with 10). On the model choice, where that is
  2 of a model's 10 trials against 5 of 20, it runs once per budget.
- kubetune progressive and HalvingRandomSearchCV depend on the budget: one run per budget
  (search_quality.py's stage split and rung schedule). On the model choice each model runs
  grid 3 + random 3 + bayesian 4 at 30, 3 + 5 + 8 at 48 and 3 + 6 + 11 at 60: one stage list
  serves every model, so the grid stage is capped at Ridge's 3-point grid.

Reference: the best CV score of a 200-trial plain optuna TPE run on the same folds (seed 10000);
baseline: the median CV score of 50 random configurations (RandomizedSearchCV, seed 10001). Both
are cached in bench/out/ (delete to recompute). Normalised regret = (reference - best) /
(reference - baseline): 0 reaches the reference, 1 is a typical random configuration, negative
beats the reference.

    python bench/quality.py [--seeds 3] [--tasks ...] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from scipy.stats import rankdata
from sklearn.base import clone
from sklearn.model_selection import RandomizedSearchCV, cross_val_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tables import Report
from kubetune.api import ModelComparison, load_resource
from kubetune.engine import JobRun, Prepared, prepare, run_comparison, run_tuning_job
from kubetune.estimators import MODEL_STEP, make_pipeline
from search_quality import (
    TASKS,
    Param,
    Task,
    grid3_size,
    job_document,
    progressive_stages,
    release_kubetune_pool,
    sklearn_search,
    sklearn_space,
)

FOLD_SEED = 0
BUDGETS = (30, 48, 60)
GOAL_BUDGET = 48
"""The regret goal's budget: "at most 50 trials", the largest that splits evenly over 3 models."""
RANK_BUDGETS = (30, 60)
"""The budgets of the issue's rank goal ("at equal numbers of fits (30 and 60 candidates)")."""
REFERENCE_TRIALS = 200
BASELINE_CONFIGS = 50
GOAL_REGRET = 0.05
OUT = Path(__file__).resolve().parent / "out"
HAS_TORCH = importlib.util.find_spec("torch") is not None
BAYESIAN = ("kt-bayesian", "kt-bayesian-gp") if HAS_TORCH else ("kt-bayesian",)
"""kubetune bayesian with its default sampler (TPE) and with ``sampler: gp`` (kubetune[gp])."""
METHODS = [
    "kt-random",
    *BAYESIAN,
    "kt-progressive",
    "RandomizedSearchCV",
    "HalvingRandomSearchCV",
    "optuna-TPE",
]
MODEL_KEYS = ("estimator", "preprocessing", "parameters")
"""What a ModelComparison model takes from a TuningJob spec; the rest of the spec is shared."""


@dataclass(frozen=True)
class Choice:
    """A model choice: each model a Task of its own (Task.name is its name in the comparison).

    The models share dataset, metric and preprocessing, so scikit-learn can search one
    pipeline whose model step is a parameter.
    """

    name: str
    models: tuple[Task, ...]

    def __post_init__(self) -> None:
        shared = {(m.dataset, m.metric, m.preprocessing) for m in self.models}
        if len(shared) != 1:
            raise ValueError(f"{self.name}: models differ in dataset, metric or preprocessing")
        if any(b % len(self.models) for b in BUDGETS):
            raise ValueError(f"{self.name}: budgets {BUDGETS} do not split evenly over models")

    @property
    def dataset(self) -> str:
        return self.models[0].dataset

    @property
    def metric(self) -> str:
        return self.models[0].metric


def _diabetes_choice() -> Choice:
    svr = next(t for t in TASKS if t.name == "diabetes-SVR")
    # Ridge and ElasticNet over kubetune's default spaces for them (kubetune.api.defaults).
    return Choice(
        name="diabetes-model-choice",
        models=(
            replace(svr, name="svr"),
            replace(
                svr,
                name="ridge",
                estimator="Ridge",
                params=(Param("alpha", "float", 1e-3, 1e3, log=True),),
            ),
            replace(
                svr,
                name="elasticnet",
                estimator="ElasticNet",
                params=(
                    Param("alpha", "float", 1e-4, 10.0, log=True),
                    Param("l1_ratio", "float", 0.05, 1.0),
                ),
            ),
        ),
    )


QUALITY_TASKS: list[Task | Choice] = [
    *(t for t in TASKS if t.name in ("digits-SVC", "breast_cancer-HGB")),
    _diabetes_choice(),
]


def models_of(task: Task | Choice) -> tuple[Task, ...]:
    return task.models if isinstance(task, Choice) else (task,)


def document(
    task: Task | Choice, seed: int, search: dict[str, Any], parallelism: int
) -> dict[str, Any]:
    """A TuningJob, or for a Choice a ModelComparison, on the fixed folds.

    ``search`` is per model: a ModelComparison's one search block applies to every model.
    """
    specs = [job_document(m, seed, search, parallelism)["spec"] for m in models_of(task)]
    for spec in specs:
        spec["cv"]["seed"] = FOLD_SEED
    if isinstance(task, Task):
        return {**job_document(task, seed, search, parallelism), "spec": specs[0]}
    shared = {k: v for k, v in specs[0].items() if k not in MODEL_KEYS}
    models = [
        {"name": m.name, **{k: spec[k] for k in MODEL_KEYS}}
        for m, spec in zip(task.models, specs, strict=True)
    ]
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "ModelComparison",
        "metadata": {"name": f"bench-{task.name.lower().replace('_', '-')}"},
        "spec": {**shared, "models": models},
    }


def prepared_for(task: Task | Choice, seed: int, parallelism: int) -> tuple[Any, Prepared]:
    job = load_resource(document(task, seed, {"method": "random", "trials": 1}, parallelism))
    return job, prepare(job)


def kt_search(method: str, task: Task | Choice, budget: int) -> dict[str, Any]:
    """kubetune's search block for ``budget`` candidates in all: budget / n per model."""
    models = models_of(task)
    per_model = budget // len(models)
    if method == "progressive":
        # One stage list for every model: its grid stage fits the smallest model's grid.
        cap = min(grid3_size(m) for m in models)
        return {"method": "progressive", "stages": progressive_stages(per_model, grid_cap=cap)}
    if method == "bayesian-gp":
        return {"method": "bayesian", "trials": per_model, "sampler": "gp"}
    return {"method": method, "trials": per_model}


def kt_scores(
    method: str, task: Task | Choice, seed: int, budget: int, parallelism: int
) -> list[list[float]]:
    """Mean CV scores of each model's trials, in trial-number order (one list per model)."""
    job = load_resource(document(task, seed, kt_search(method, task, budget), parallelism))
    # A prepared job of its own (5 ms): the engine swaps its data for the workers' memory map,
    # whose file is gone once the run ends, so the seed's shared one must stay untouched.
    prepared = prepare(job)
    runs: list[JobRun]
    if isinstance(job, ModelComparison):
        runs = run_comparison(job, parallelism=parallelism, prepared=prepared).runs
    else:
        runs = [run_tuning_job(job, parallelism=parallelism, prepared=prepared).run]
    out = []
    for run in runs:
        records = sorted(run.records, key=lambda r: r.number)
        out.append([r.mean(run.metric) if r.ok else float("-inf") for r in records])
    return out


def best_of(per_model: list[list[float]], budget: int) -> float:
    """The best of the first budget / n trials of each of the n models."""
    share = budget // len(per_model)
    return max(max(scores[:share]) for scores in per_model)


@dataclass(frozen=True)
class Setup:
    """How scikit-learn and optuna search a task with kubetune's own pipeline and estimators."""

    pipeline: Any
    distributions: dict[str, Any] | list[dict[str, Any]]
    """scipy distributions; for a Choice one dict per model, its model step a parameter."""
    estimators: dict[str, Any]
    """A Choice's estimators by model name (as kubetune builds them); empty for a Task."""


def setup_for(task: Task | Choice, job: Any, prepared: Prepared) -> Setup:
    specs = job.spec.models if isinstance(task, Choice) else [job.spec]
    pipelines = [
        make_pipeline(
            estimator=spec.estimator,
            preprocessing=spec.preprocessing,
            categorical_columns=prepared.data.categorical_columns,
            seed=prepared.seed,
        )
        for spec in specs
    ]
    if isinstance(task, Task):
        return Setup(pipelines[0], sklearn_space(task), {})
    estimators = {
        m.name: pipe.named_steps[MODEL_STEP] for m, pipe in zip(task.models, pipelines, strict=True)
    }
    distributions = [{MODEL_STEP: [estimators[m.name]], **sklearn_space(m)} for m in task.models]
    # The preprocessing is shared (Choice checks it), so the first pipeline serves every model.
    return Setup(pipelines[0], distributions, estimators)


def suggest(trial: optuna.Trial, p: Param, name: str | None = None) -> Any:
    name = name or p.name
    if p.kind == "float":
        return trial.suggest_float(name, p.low, p.high, log=p.log)
    return trial.suggest_int(name, int(p.low), int(p.high), step=p.step or 1, log=p.log)


def optuna_params(trial: optuna.Trial, task: Task | Choice, setup: Setup) -> dict[str, Any]:
    """Pipeline parameters; for a Choice the model first, then that model's parameters."""
    if isinstance(task, Task):
        return {f"{MODEL_STEP}__{p.name}": suggest(trial, p) for p in task.params}
    name = trial.suggest_categorical("model", [m.name for m in task.models])
    model = next(m for m in task.models if m.name == name)
    # Names per model: Ridge's and ElasticNet's alpha have different ranges.
    return {
        MODEL_STEP: clone(setup.estimators[name]),
        **{f"{MODEL_STEP}__{p.name}": suggest(trial, p, f"{name}__{p.name}") for p in model.params},
    }


def optuna_scores(
    task: Task | Choice, seed: int, trials: int, parallelism: int, prepared: Prepared, setup: Setup
) -> list[float]:
    release_kubetune_pool()
    X, y = prepared.data.X, prepared.data.y

    def objective(trial: optuna.Trial) -> float:
        model = clone(setup.pipeline).set_params(**optuna_params(trial, task, setup))
        scores = cross_val_score(
            model, X, y, scoring=task.metric, cv=prepared.splits, n_jobs=parallelism
        )
        return float(np.mean(scores))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    return [float("-inf") if t.value is None else t.value for t in study.trials]


def randomized_scores(
    task: Task | Choice, seed: int, n: int, parallelism: int, prepared: Prepared, setup: Setup
) -> list[float]:
    release_kubetune_pool()
    search = RandomizedSearchCV(
        setup.pipeline,
        setup.distributions,
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


def reference_and_baseline(
    task: Task | Choice, parallelism: int, log: Callable[[str], None]
) -> dict[str, float]:
    path = OUT / f"reference-{task.name}-folds{FOLD_SEED}.json"
    if path.exists():
        return json.loads(path.read_text())
    job, prepared = prepared_for(task, 0, parallelism)
    setup = setup_for(task, job, prepared)
    start = time.perf_counter()
    ref = optuna_scores(task, 10_000, REFERENCE_TRIALS, parallelism, prepared, setup)
    rnd = randomized_scores(task, 10_001, BASELINE_CONFIGS, parallelism, prepared, setup)
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
    task: Task | Choice,
    seed: int,
    parallelism: int,
    methods: list[str],
    log: Callable[[str], None] | None = None,
) -> dict[tuple[str, int], float]:
    """Best score per (method, budget)."""
    job, prepared = prepared_for(task, seed, parallelism)
    setup = setup_for(task, job, prepared)
    top = max(BUDGETS)
    choice = isinstance(task, Choice)
    best: dict[tuple[str, int], float] = {}

    def prefixes(method: str, per_model: list[list[float]]) -> None:
        for b in BUDGETS:
            best[(method, b)] = best_of(per_model, b)

    for method in methods:
        start = time.perf_counter()
        if method == "kt-random" or (method in BAYESIAN and not choice):
            prefixes(method, kt_scores(method[3:], task, seed, top, parallelism))
        elif method in (*BAYESIAN, "kt-progressive"):
            for b in BUDGETS:
                scores = kt_scores(method[3:], task, seed, b, parallelism)
                best[(method, b)] = best_of(scores, b)
        elif method == "RandomizedSearchCV":
            prefixes(method, [randomized_scores(task, seed, top, parallelism, prepared, setup)])
        elif method == "optuna-TPE":
            prefixes(method, [optuna_scores(task, seed, top, parallelism, prepared, setup)])
        elif method == "HalvingRandomSearchCV":
            # Its folds and min_resources follow the task type, the same for every model.
            like = models_of(task)[0]
            for b in BUDGETS:
                out = sklearn_search(
                    method,
                    like,
                    seed,
                    b,
                    parallelism,
                    prepared,
                    setup.pipeline,
                    space=setup.distributions,
                )
                best[(method, b)] = out.score
        if log:
            log(f"    {task.name} seed {seed} {method}: {time.perf_counter() - start:.1f} s")
    return best


def run_all(
    *, seeds: int, parallelism: int, task_names: list[str] | None, log: Callable[[str], None]
) -> dict[str, Any]:
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    warnings.simplefilter("ignore")
    results: dict[str, Any] = {}
    for task in QUALITY_TASKS:
        if task_names and task.name not in task_names:
            continue
        rb = reference_and_baseline(task, parallelism, log)
        per_seed = []
        for seed in range(seeds):
            start = time.perf_counter()
            per_seed.append(run_seed(task, seed, parallelism, METHODS, log))
            log(f"  {task.name} seed {seed}: {time.perf_counter() - start:.0f} s")
        results[task.name] = {"task": task, "rb": rb, "per_seed": per_seed}
    return results


def describe(task: Task | Choice) -> str:
    """The table caption's account of the task."""
    if isinstance(task, Task):
        return f"{task.estimator} over {', '.join(p.name for p in task.params)}; {task.metric}"
    models = " | ".join(
        f"{m.estimator} over {', '.join(p.name for p in m.params)}" for m in task.models
    )
    pre = "+".join(task.models[0].preprocessing) or "no preprocessing"
    return (
        f"model choice: {models}; {pre}; {task.metric}; kubetune: one ModelComparison, "
        f"1/{len(task.models)} of the candidates per model"
    )


def report(results: dict[str, Any], rep: Report, seeds: int) -> list[dict[str, Any]]:
    goals: list[dict[str, Any]] = []
    all_ranks: dict[int, dict[str, list[float]]] = {b: {m: [] for m in METHODS} for b in BUDGETS}
    regret_at: dict[tuple[str, str, int], float] = {}
    for name, r in results.items():
        ref, base = r["rb"]["reference"], r["rb"]["baseline"]
        rows: list[tuple[Any, ...]] = []
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
            caption=f"Item 3, {name} ({describe(task)}); reference "
            f"{ref:.4f} (200-trial TPE), baseline {base:.4f} (median of 50 random configs); "
            f"{seeds} seeds",
        )
    names = list(results)
    for m in ("kt-progressive", *BAYESIAN):
        worst = max(regret_at[(n, m, GOAL_BUDGET)] for n in names)
        goals.append(
            {
                "item": "3",
                "goal": f"{m}: mean normalised regret <= {GOAL_REGRET} at {GOAL_BUDGET} "
                "candidates (<= 50 trials) on every task",
                "figure": ", ".join(f"{n} {regret_at[(n, m, GOAL_BUDGET)]:.3f}" for n in names)
                + f" (at 30: {', '.join(f'{regret_at[(n, m, 30)]:.3f}' for n in names)})",
                "held": worst <= GOAL_REGRET,
            }
        )
    rows = []
    kubetune = ("kt-progressive", *BAYESIAN)
    for b in BUDGETS:
        means = {m: statistics.mean(all_ranks[b][m]) for m in METHODS}
        order = sorted(METHODS, key=lambda m: means[m])
        for m in METHODS:
            rows.append((b, m, *(f"{x:.2f}" for x in all_ranks[b][m]), f"{means[m]:.2f}"))
        if b not in RANK_BUDGETS:
            continue
        goals.append(
            {
                "item": "3",
                "goal": f"best mean rank at {b} candidates is kubetune progressive or bayesian",
                "figure": f"best {order[0]} {means[order[0]]:.2f}; "
                + ", ".join(f"{m[3:]} {means[m]:.2f}" for m in kubetune),
                "held": min(means[m] for m in kubetune) <= means[order[0]] + 1e-12,
            }
        )
    rep.table(
        ["budget", "method", *names, "all tasks"],
        rows,
        caption="Item 3, mean rank at equal numbers of candidates "
        f"(1 = best of the {len(METHODS)} methods)",
    )
    return goals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--tasks", nargs="+", choices=[t.name for t in QUALITY_TASKS])
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
