"""Strategies propose candidates; they never fit anything (the executor does).

Every method runs on an optuna study, which is the stage's trial ledger: grid (GridSampler),
random (RandomSampler or QMC) and bayesian (TPE or GP). The ask/tell interface lets one driver
keep the workers busy across stages and models.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from kubetune import fast_gp, fast_tpe
from kubetune.planning import StagePlan, grid_values, planned_trials
from kubetune.space import contains, decode, distributions, to_optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)
fast_tpe.install()


class GridOrder:
    """The grid's points in an order fixed by the seed; a cap takes a random subset.

    Points are decoded from their index (mixed radix), so a large capped grid costs nothing.
    """

    def __init__(self, plan: StagePlan, *, count: int) -> None:
        self._axes = [(p.name, grid_values(p, grid_points=plan.grid_points)) for p in plan.space]
        size = math.prod(len(values) for _, values in self._axes)
        rng = random.Random(plan.seed)
        self._order = rng.sample(range(size), k=min(count, size))

    def __getitem__(self, position: int) -> dict[str, Any]:
        index = self._order[position]
        point: dict[str, Any] = {}
        for name, values in reversed(self._axes):
            index, digit = divmod(index, len(values))
            point[name] = to_optuna(values[digit])
        return point


@dataclass
class Candidate:
    """A proposed set of parameters, numbered across stages."""

    number: int
    params: dict[str, Any]
    trial: optuna.trial.Trial = field(repr=False)


FOLDS_ATTR = "kubetune.folds"
"""The trial's per-fold results (user attribute), so the full table survives in the ledger."""
NUMBER_ATTR = "kubetune.trial"
"""The trial's number across stages (optuna's own numbers also count warm-start trials)."""


def random_point(plan: StagePlan, number: int, dists: dict[str, Any]) -> dict[str, Any]:
    """The random candidate of trial ``number``: drawn from its own seed, not a running stream,
    so a stage resumed after a pod was killed proposes exactly what it would have."""
    seed = int(np.random.SeedSequence([plan.seed, number]).generate_state(1)[0])
    scratch = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return dict(scratch.ask(dists).params)


def startup_trials(budget: int) -> int:
    """How many candidates a bayesian stage of ``budget`` draws before its model takes over."""
    return max(2, min(10, budget // 4))


class StartupDesign:
    """A bayesian stage's first candidates: a scrambled Sobol sequence, not independent draws.

    A small budget's few startup points then cover every parameter's range evenly (each
    dimension stratified), where random ones leave gaps and clusters that TPE's first model
    inherits; Ax and SMAC start the same way. Point ``number`` depends only on the seed, so a
    resumed stage proposes what the original would have.
    """

    def __init__(self, plan: StagePlan, *, count: int, dists: dict[str, Any]) -> None:
        from scipy.stats import qmc

        self._dists = dists
        self.count = count
        # A power of two keeps the sequence's balance; the first ``count`` points are used.
        size = 1 << max(0, (count - 1).bit_length())
        rng = np.random.default_rng([plan.seed, 0x50B01])
        self._unit = qmc.Sobol(d=len(dists), scramble=True, seed=rng).random(size)

    def __getitem__(self, number: int) -> dict[str, Any]:
        row = self._unit[number]
        return {
            name: from_unit(float(u), dist)
            for (name, dist), u in zip(self._dists.items(), row, strict=True)
        }


def from_unit(u: float, dist: Any) -> Any:
    """The value at quantile ``u`` in [0, 1) of an optuna distribution, on its own scale."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return dist.choices[min(int(u * len(dist.choices)), len(dist.choices) - 1)]
    if dist.log:
        # Integers on a log scale: each integer owns the interval around it, as optuna samples.
        pad = 0.5 if isinstance(dist, optuna.distributions.IntDistribution) else 0.0
        low, high = math.log(dist.low - pad), math.log(dist.high + pad)
        value = math.exp(low + u * (high - low))
        if pad:
            return int(min(max(round(value), dist.low), dist.high))
        return float(min(max(value, dist.low), dist.high))
    if dist.step is None:
        return float(dist.low + u * (dist.high - dist.low))
    count = round((dist.high - dist.low) / dist.step) + 1
    value = dist.low + dist.step * min(int(u * count), count - 1)
    return int(value) if isinstance(dist, optuna.distributions.IntDistribution) else float(value)


def make_sampler(plan: StagePlan, *, budget: int) -> optuna.samplers.BaseSampler:
    if plan.method == "grid":
        # Grid points are enqueued one by one (see GridOrder); the sampler never has to choose.
        # optuna's GridSampler calls study.stop() when exhausted, which ask/tell does not allow.
        return optuna.samplers.RandomSampler(seed=plan.seed)
    if plan.sampler == "qmc":
        return optuna.samplers.QMCSampler(seed=plan.seed, scramble=True)
    if plan.method == "random":
        return optuna.samplers.RandomSampler(seed=plan.seed)
    startup = startup_trials(budget)
    if plan.sampler == "gp":
        _single_threaded_torch()
        return fast_gp.GPSampler(seed=plan.seed, n_startup_trials=startup)
    return optuna.samplers.TPESampler(
        seed=plan.seed,
        n_startup_trials=startup,
        multivariate=True,
        constant_liar=True,
    )


def _single_threaded_torch() -> None:
    """One PyTorch thread for the GP sampler's small matrices (trials x trials).

    Its default, a thread per core, made each ask 8 times slower at 60 trials on 2 busy cores
    (bench/overhead.py): the threads wait on each other and on the fits. Nothing else in the
    runner uses PyTorch.
    """
    import torch

    torch.set_num_threads(1)


class StageSearch:
    """One stage's candidates, proposed in an order fixed by the seed.

    Grid and random candidates do not depend on results, so any number may be pending.
    Bayesian candidates are asked in batches of ``parallelism`` and the next batch is asked only
    when the last one is told: the same seed then gives the same trials whatever the timing.
    """

    def __init__(
        self,
        plan: StagePlan,
        *,
        storage: optuna.storages.BaseStorage | None = None,
        study_name: str | None = None,
        warm_start: Sequence[tuple[dict[str, Any], float]] = (),
        after_tell: Callable[[], None] | None = None,
    ) -> None:
        self.plan = plan
        self.planned = planned_trials(plan)
        self._dists = distributions(plan.space)
        self.study = optuna.create_study(
            storage=storage,
            sampler=make_sampler(plan, budget=self.planned),
            study_name=study_name,
            direction="maximize",
            load_if_exists=storage is not None,
        )
        self.after_tell = after_tell
        existing = self.study.get_trials(deepcopy=False)
        self.resumed = [
            t
            for t in existing
            if t.state in (TrialState.COMPLETE, TrialState.FAIL)
            and not t.system_attrs.get("fixed_params_warm_start")
            and FOLDS_ATTR in t.user_attrs
        ]
        # Trials a killed pod left running: evaluated again first, under their own numbers.
        self._orphans = [
            t for t in existing if t.state == TrialState.RUNNING and NUMBER_ATTR in t.user_attrs
        ]
        self.warm_started = 0
        if plan.method == "bayesian" and not existing:
            for params, score in warm_start:
                if contains(plan.space, params) and math.isfinite(score):
                    self.study.add_trial(
                        optuna.trial.create_trial(
                            params={k: to_optuna(params[k]) for k in self._dists},
                            distributions=self._dists,
                            value=score,
                            system_attrs={"fixed_params_warm_start": True},
                        )
                    )
                    self.warm_started += 1
        self._grid = GridOrder(plan, count=self.planned) if plan.method == "grid" else None
        # The startup candidates the model would otherwise draw at random: fewer when earlier
        # stages' trials already seed it (those count towards its startup).
        seeded = sum(
            bool(t.system_attrs.get("fixed_params_warm_start"))
            for t in self.study.get_trials(deepcopy=False)
        )
        bayesian = plan.method == "bayesian" and bool(self._dists)
        startup = startup_trials(self.planned) - seeded if bayesian else 0
        self._startup = (
            StartupDesign(plan, count=startup, dists=self._dists) if startup > 0 else None
        )
        self.asked = len(self.resumed) + len(self._orphans)
        self.told = len(self.resumed)
        self.failed = sum(t.state == TrialState.FAIL for t in self.resumed)
        self._pending = 0
        self._unasked_orphans = list(self._orphans)
        self._waiting = any(t.state == TrialState.WAITING for t in existing)
        self._stopped = False

    @property
    def batch(self) -> int:
        return self.plan.parallelism if self.plan.method == "bayesian" else self.planned

    def can_ask(self) -> bool:
        if self._unasked_orphans:
            return True
        if self._stopped or self.asked >= self.planned:
            return False
        if self.plan.method == "bayesian" and self._pending:
            # Within a batch keep asking; a new batch waits for the last one to be told.
            return (self.asked - self.told) < self.batch and self._batch_open
        return True

    @property
    def batch_open(self) -> bool:
        """A bayesian batch has begun and is not yet all asked.

        The driver asks the rest at once, before any result can come back: otherwise a later
        candidate of the batch would see an earlier one finished or still running depending on
        timing, and the same seed would not give the same trials.
        """
        return self.plan.method == "bayesian" and self._pending > 0 and self.can_ask()

    def ask(self) -> Candidate:
        if self._unasked_orphans:
            frozen = self._unasked_orphans.pop(0)
            self._pending += 1
            return Candidate(
                number=frozen.user_attrs[NUMBER_ATTR],
                params=decode(self.plan.space, frozen.params),
                trial=optuna.trial.Trial(self.study, frozen._trial_id),
            )
        if self.plan.method == "bayesian" and not self._pending:
            self._batch_open = True
        if self._waiting:
            self._waiting = False  # a point enqueued before a restart: ask pops it first
        elif self._grid is not None:
            self.study.enqueue_trial(self._grid[self.asked], skip_if_exists=False)
        elif self.plan.sampler == "random":
            self.study.enqueue_trial(
                random_point(self.plan, self.asked, self._dists), skip_if_exists=False
            )
        elif self._startup is not None and self.asked < self._startup.count:
            self.study.enqueue_trial(self._startup[self.asked], skip_if_exists=False)
        trial = self.study.ask(self._dists)
        number = self.plan.trial_offset + self.asked
        trial.set_user_attr(NUMBER_ATTR, number)
        self.asked += 1
        self._pending += 1
        if self.plan.method == "bayesian" and (self.asked - self.told) >= self.batch:
            self._batch_open = False
        return Candidate(number=number, params=decode(self.plan.space, trial.params), trial=trial)

    def tell(
        self,
        candidate: Candidate,
        score: float | None,
        *,
        folds: list[dict[str, Any]] | None = None,
    ) -> None:
        """Record a candidate's mean objective (None or NaN: failed) and its fold results."""
        self._pending -= 1
        self.told += 1
        if folds is not None:
            candidate.trial.set_user_attr(FOLDS_ATTR, folds)
        if score is None or not math.isfinite(score):
            self.failed += 1
            self.study.tell(candidate.trial, state=TrialState.FAIL)
        else:
            self.study.tell(candidate.trial, score)
        if self.after_tell is not None:
            self.after_tell()
        if self._pending == 0:
            self._batch_open = True

    def stop(self) -> None:
        """Ask no more candidates (too many failures); pending ones may still be told."""
        self._stopped = True

    @property
    def done(self) -> bool:
        return (
            self._pending == 0
            and not self._unasked_orphans
            and (self._stopped or self.asked >= self.planned)
        )

    _batch_open: bool = True
