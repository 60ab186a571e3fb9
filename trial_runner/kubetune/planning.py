"""Pure planning: stages from spec, grids from ranges, and the progressive narrowing of a space.

No scikit-learn or optuna here: the operator plans stages with these functions too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field

from kubetune.api.base import ApiModel
from kubetune.api.defaults import default_space
from kubetune.api.parameters import Choice, FloatRange, IntRange, Parameter, choice_key
from kubetune.api.spec import (
    DEFAULT_GRID_POINTS,
    DEFAULT_TRIALS,
    MAX_TRIALS,
    EstimatorSpec,
    ModelComparisonSpec,
    Refinement,
    SearchSpec,
    TuningJobSpec,
)
from kubetune.api.status import TrialCounts


class StagePlan(ApiModel):
    """Everything one stage needs, frozen when the stage starts (a Job carries it in a cluster)."""

    index: int = Field(ge=0)
    """0-based position of the stage."""
    name: str
    method: str
    space: list[Parameter]
    trials: int | None = None
    """random and bayesian: the budget; grid: an optional cap on the grid."""
    grid_points: int = DEFAULT_GRID_POINTS
    sampler: str
    seed: int
    parallelism: int = 1
    max_failed_trials: int | None = None
    trial_offset: int = 0
    """Number of the stage's first trial (trials are numbered across stages)."""


def resolve_space(
    *, estimator: EstimatorSpec, parameters: list[Parameter] | None
) -> list[Parameter]:
    """The space to search: the spec's parameters, or the estimator's default space.

    A default-space parameter that the spec fixes in estimator.params is left out: fixed wins.
    """
    if parameters:
        return list(parameters)
    return [p for p in default_space(estimator.name) if p.name not in estimator.params]


def stage_name(index: int, method: str) -> str:
    return f"s{index + 1}-{method}"


def default_sampler(method: str) -> str:
    return {"grid": "grid", "random": "random", "bayesian": "tpe"}[method]


def plan_stage(
    *,
    search: SearchSpec,
    index: int,
    space: Sequence[Parameter],
    seed: int,
    trial_offset: int = 0,
) -> StagePlan:
    """The plan of stage ``index`` of ``search`` over ``space``."""
    stage = search.stage_list()[index]
    return StagePlan(
        index=index,
        name=stage_name(index, stage.method),
        method=stage.method,
        space=list(space),
        trials=stage.trials
        if stage.trials is not None or stage.method == "grid"
        else DEFAULT_TRIALS,
        grid_points=stage.grid_points or DEFAULT_GRID_POINTS,
        sampler=stage.sampler or default_sampler(stage.method),
        seed=seed + index,
        parallelism=search.parallelism,
        max_failed_trials=search.max_failed_trials,
        trial_offset=trial_offset,
    )


def planned_trials(plan: StagePlan) -> int:
    """How many candidates the stage will evaluate."""
    if plan.method == "grid":
        size = grid_size(plan.space, grid_points=plan.grid_points)
        return size if plan.trials is None else min(size, plan.trials)
    return plan.trials or DEFAULT_TRIALS


def planned_total(*, search: SearchSpec, space: Sequence[Parameter]) -> int:
    """Trials planned over all stages; later stages count with their budget or grid size."""
    total = 0
    for index in range(len(search.stage_list())):
        total += planned_trials(plan_stage(search=search, index=index, space=space, seed=0))
    return total


# --- grids -------------------------------------------------------------------------------------


def search_problems(spec: TuningJobSpec | ModelComparisonSpec) -> list[str]:
    """Grid stages without a cap whose grid is larger than a stage may run, one line each.

    Each line begins with the path of the field to blame within the spec (``search...``).

    The field limits cannot see this: a grid's size is the product of its parameters' points.
    Later progressive stages narrow the space, so the full space bounds their grids too.
    """
    if isinstance(spec, TuningJobSpec):
        spaces = [("", resolve_space(estimator=spec.estimator, parameters=spec.parameters))]
    else:
        spaces = [
            (f"model {m.name!r}: ", resolve_space(estimator=m.estimator, parameters=m.parameters))
            for m in spec.models
        ]
    stages = spec.search.stage_list()
    problems: list[str] = []
    for index, stage in enumerate(stages):
        if stage.method != "grid" or stage.trials is not None:
            continue
        where = "search" + (f".stages[{index}]" if spec.search.method == "progressive" else "")
        for model, space in spaces:
            counts = [
                len(grid_values(p, grid_points=stage.grid_points or DEFAULT_GRID_POINTS))
                for p in space
            ]
            size = math.prod(counts)
            if size > MAX_TRIALS:
                problems.append(
                    f"{where}: {model}the grid has {size:,} points "
                    f"({' x '.join(map(str, counts))}), more than the {MAX_TRIALS:,} a stage "
                    "may run; cap it with trials, use fewer gridPoints or choices, "
                    "or search with method random"
                )
    return problems


def grid_values(parameter: Parameter, *, grid_points: int) -> list[Choice]:
    """The values a parameter takes on a grid: evenly spaced (log ranges in log space)."""
    if parameter.int_ is not None:
        return list(_int_grid(parameter.int_, grid_points))
    if parameter.float_ is not None:
        return list(_float_grid(parameter.float_, grid_points))
    return parameter.choices


def grid_size(space: Sequence[Parameter], *, grid_points: int) -> int:
    return math.prod(len(grid_values(p, grid_points=grid_points)) for p in space)


def _int_grid(r: IntRange, points: int) -> list[int]:
    step = r.step or 1
    count = (r.high - r.low) // step + 1
    if count <= points:
        return [r.low + i * step for i in range(count)]
    if r.log:
        raw = _spaced(math.log(r.low), math.log(r.high), points)
        values = [round(math.exp(v)) for v in raw]
    else:
        raw = _spaced(0.0, float(count - 1), points)
        values = [r.low + round(v) * step for v in raw]
    values = [min(max(v, r.low), r.high) for v in values]
    return sorted(set(values))


def _float_grid(r: FloatRange, points: int) -> list[float]:
    if r.log:
        values = [math.exp(v) for v in _spaced(math.log(r.low), math.log(r.high), points)]
    else:
        values = _spaced(r.low, r.high, points)
    if r.step is not None:
        values = [_snap(v, r.low, r.step, r.high) for v in values]
    values = [float(f"{v:.12g}") for v in values]
    values[0], values[-1] = r.low, (values[-1] if r.step else r.high)
    return sorted(set(values))


def _spaced(low: float, high: float, points: int) -> list[float]:
    return [low + (high - low) * i / (points - 1) for i in range(points)]


def _snap(value: float, low: float, step: float, high: float) -> float:
    snapped = low + round((value - low) / step) * step
    return min(max(snapped, low), low + math.floor((high - low) / step + 1e-9) * step)


# --- progressive refinement ----------------------------------------------------------------------


def refine_space(
    *,
    space: Sequence[Parameter],
    original: Sequence[Parameter],
    top: Sequence[Mapping[str, Any]],
    refinement: Refinement,
) -> list[Parameter]:
    """The next stage's space, narrowed around the finished stage's best trials.

    Each numeric range becomes the smallest range that holds the top-k values and is at least
    ``refinement.factor`` of the finished stage's width, centred on the best value, moved (not
    cut) to stay inside the original bounds; log ranges are narrowed in log space. A
    categorical keeps the choices the top-k used, in their original order. With no successful
    trial the space is kept.

    Args:
        space: the finished stage's space.
        original: the space of the first stage, whose bounds are never left.
        top: parameters of the finished stage's best trials, best first.
        refinement: the narrowing factor and k.
    """
    top = list(top)[: refinement.top_k]
    if not top:
        return list(space)
    by_name = {p.name: p for p in original}
    return [_refine(p, by_name.get(p.name, p), top, refinement.factor) for p in space]


def _refine(
    param: Parameter, original: Parameter, top: list[Mapping[str, Any]], factor: float
) -> Parameter:
    values = [row[param.name] for row in top if param.name in row]
    if not values:
        return param
    if param.kind == "categorical":
        used = {choice_key(v) for v in values}
        kept = [c for c in original.choices if choice_key(c) in used]
        return Parameter(name=param.name, categorical=kept or param.choices)
    bounds = original.int_ or original.float_
    assert bounds is not None
    log = bounds.log
    t = math.log if log else float
    inv = math.exp if log else float
    lo_b, hi_b = t(bounds.low), t(bounds.high)
    points = [t(v) for v in values if v is not None]
    if not points:
        return param
    best = points[0]
    # Each stage narrows the last one's range by the factor (stage 3 is factor^2 as wide as the
    # original); the top-k values keep it from closing in on a single lucky trial.
    current = param.int_ or param.float_
    width = factor * (t(current.high) - t(current.low)) if current else factor * (hi_b - lo_b)
    lo = min(min(points), best - width / 2)
    hi = max(max(points), best + width / 2)
    if lo < lo_b:
        hi, lo = hi + (lo_b - lo), lo_b
    if hi > hi_b:
        lo, hi = lo - (hi - hi_b), hi_b
    lo = max(lo, lo_b)
    low, high = inv(lo), inv(hi)
    if original.int_ is not None:
        return Parameter(name=param.name, int_=_int_range(original.int_, low, high))
    assert original.float_ is not None
    return Parameter(name=param.name, float_=_float_range(original.float_, low, high))


def _int_range(bounds: IntRange, low: float, high: float) -> IntRange:
    step = bounds.step or 1
    lo = bounds.low + math.floor((low - bounds.low) / step + 1e-9) * step
    hi = bounds.low + math.ceil((high - bounds.low) / step - 1e-9) * step
    lo, hi = max(lo, bounds.low), min(hi, bounds.high)
    if lo >= hi:  # a range collapsed onto one value: keep one step of room, inside the bounds
        hi = min(lo + step, bounds.high)
        lo = hi - step
    return IntRange(low=lo, high=hi, step=bounds.step, log=bounds.log)


def _float_range(bounds: FloatRange, low: float, high: float) -> FloatRange:
    low, high = max(low, bounds.low), min(high, bounds.high)
    if bounds.step is not None:
        step = bounds.step
        low = bounds.low + math.floor((low - bounds.low) / step + 1e-9) * step
        high = bounds.low + math.ceil((high - bounds.low) / step - 1e-9) * step
        high = min(high, bounds.high)
        if low >= high:
            low = max(bounds.low, high - step)
    return FloatRange(
        low=float(f"{low:.12g}"), high=float(f"{high:.12g}"), step=bounds.step, log=bounds.log
    )


# --- the contract between the operator and a stage's runner -----------------------------------


class ObjectRef(ApiModel):
    """The resource a runner reports to."""

    api_version: str = "kubetune.io/v1alpha1"
    kind: str = "TuningJob"
    namespace: str
    name: str
    uid: str | None = None


class StageTask(ApiModel):
    """Everything a stage Job runs, frozen when the operator creates the Job.

    The Job carries it (as JSON in an environment variable), so a later spec edit never changes a
    running stage. The runner reports to ``target`` and numbers its trials from
    ``plan.trial_offset``.
    """

    target: ObjectRef
    spec: TuningJobSpec
    plan: StagePlan
    planned_total: int = Field(ge=0)
    """Trials planned over every stage, as known when the stage started (for progress)."""
    trials_before: TrialCounts = Field(default_factory=TrialCounts)
    """Trials of the stages before this one."""
