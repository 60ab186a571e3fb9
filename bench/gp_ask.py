"""Milliseconds per ask of kubetune's GP sampler, against optuna's own and without greenlet.

kubetune's GP sampler is optuna's GPSampler run without its CPU device mode
(`kubetune.fast_gp`), with kubetune's settings (`kubetune.strategies.make_sampler`:
single-threaded PyTorch, a Sobol start of a quarter of the budget). Three variants, on the
search spaces users tune, with synthetic scores so that nothing is fitted:

- kubetune: as the runner uses it, with greenlet (the `gp` extra);
- optuna: optuna's GPSampler with the same settings, so inside its `torch.device("cpu")` mode;
- no greenlet: kubetune's sampler with the greenlet import blocked. optuna then runs the
  L-BFGS-B steps of its acquisition search one start after another instead of as one batch
  (and says so in a warning).

Each (space, variant) is a fresh process; the variants alternate, `--repeats` times.

    python bench/gp_ask.py [--trials 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from types import SimpleNamespace
from typing import Any

SPACES = {
    # name: [(param, kind, low, high, log)], the score is a smooth bowl over the unit cube
    "2 log floats (SVC: C, gamma)": [
        ("C", "float", 1e-3, 1e3, True),
        ("gamma", "float", 1e-5, 1e1, True),
    ],
    "log float + 3 ints (HGB-like)": [
        ("learning_rate", "float", 1e-3, 1.0, True),
        ("max_iter", "int", 50, 500, False),
        ("max_leaf_nodes", "int", 7, 127, False),
        ("min_samples_leaf", "int", 1, 100, False),
    ],
    "4 categories + an int (item 2's DummyClassifier)": [
        ("strategy", "cat", 0, 3, False),
        ("random_state", "int", 0, 10_000, False),
    ],
}

CHILD = """
import json, sys, time, warnings
if sys.argv[1] == "no greenlet":
    sys.modules["greenlet"] = None  # optuna then falls back to one start after another
warnings.simplefilter("ignore")
sys.path.insert(0, sys.argv[4])
import gp_ask
print(json.dumps(gp_ask.time_asks(
    space=sys.argv[2], trials=int(sys.argv[3]), optuna_class=sys.argv[1] == "optuna"
)))
"""


def time_asks(*, space: str, trials: int, optuna_class: bool = False) -> dict[str, float]:
    import optuna

    from kubetune.strategies import make_sampler, startup_trials

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    plan = SimpleNamespace(method="bayesian", sampler="gp", seed=0)
    sampler = make_sampler(plan, budget=trials)  # type: ignore[arg-type]
    if optuna_class:  # the same settings (and one PyTorch thread), optuna's class
        sampler = optuna.samplers.GPSampler(seed=0, n_startup_trials=startup_trials(trials))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    dists: dict[str, Any] = {}
    for name, kind, low, high, log in SPACES[space]:
        if kind == "float":
            dists[name] = optuna.distributions.FloatDistribution(low, high, log=log)
        elif kind == "int":
            dists[name] = optuna.distributions.IntDistribution(low, high, log=log)
        else:
            dists[name] = optuna.distributions.CategoricalDistribution(
                ["a", "b", "c", "d"][: high + 1]
            )
    asks = []
    for _ in range(trials):
        start = time.perf_counter()
        trial = study.ask(dists)
        asks.append(time.perf_counter() - start)
        study.tell(trial, _score(trial.params, dists))
    return {
        "ms_per_ask": sum(asks) / trials * 1000,
        "ms_last_10": sum(asks[-10:]) / 10 * 1000,
    }


def _score(params: dict[str, Any], dists: dict[str, Any]) -> float:
    # A smooth bowl with its top at 0.3 of each range (on the log scale for log ranges).
    total = 0.0
    for name, value in params.items():
        dist = dists[name]
        if hasattr(dist, "choices"):
            u = dist.choices.index(value) / max(1, len(dist.choices) - 1)
        elif dist.log:
            u = (math.log(value) - math.log(dist.low)) / (math.log(dist.high) - math.log(dist.low))
        else:
            u = (value - dist.low) / (dist.high - dist.low)
        total += (u - 0.3) ** 2
    return -total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    here = sys.path[0]
    print(f"GP sampler, {args.trials} trials, ms per ask (median of {args.repeats} processes)")
    variants = ("kubetune", "optuna", "no greenlet")
    print(
        f"{'search space':<50} {'kubetune':>9} {'optuna':>9} {'no greenlet':>12}"
        f" {'kubetune/optuna':>16} {'kubetune/no greenlet':>21}"
    )
    for space in SPACES:
        runs: dict[str, list[float]] = {variant: [] for variant in variants}
        for _ in range(args.repeats):
            for variant in variants:
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, variant, space, str(args.trials), here],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                runs[variant].append(json.loads(out.strip().splitlines()[-1])["ms_per_ask"])
        ours, theirs, serial = (statistics.median(runs[variant]) for variant in variants)
        print(
            f"{space:<50} {ours:>9.1f} {theirs:>9.1f} {serial:>12.1f}"
            f" {ours / theirs:>16.2f} {ours / serial:>21.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
