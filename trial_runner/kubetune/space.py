"""Parameters mapped onto optuna distributions, and values back onto what the estimator takes."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalChoiceType,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from kubetune.api.parameters import Choice, Parameter


def to_optuna(choice: Choice) -> CategoricalChoiceType:
    """optuna takes scalar choices only: a list choice travels as its JSON text."""
    return json.dumps(choice) if isinstance(choice, list) else choice


def distribution(parameter: Parameter) -> BaseDistribution:
    if parameter.int_ is not None:
        r = parameter.int_
        return IntDistribution(low=r.low, high=r.high, log=r.log, step=r.step or 1)
    if parameter.float_ is not None:
        f = parameter.float_
        return FloatDistribution(low=f.low, high=f.high, log=f.log, step=f.step)
    return CategoricalDistribution([to_optuna(c) for c in parameter.choices])


def distributions(space: Sequence[Parameter]) -> dict[str, BaseDistribution]:
    return {p.name: distribution(p) for p in space}


def decode(space: Sequence[Parameter], values: Mapping[str, Any]) -> dict[str, Any]:
    """optuna's parameter values as the estimator takes them (list choices decoded)."""
    out = dict(values)
    for p in space:
        if p.kind == "categorical" and isinstance(out.get(p.name), str):
            lists = {json.dumps(c) for c in p.choices if isinstance(c, list)}
            if out[p.name] in lists:
                out[p.name] = json.loads(out[p.name])
    return out


def contains(space: Sequence[Parameter], params: Mapping[str, Any]) -> bool:
    """Whether a trial's decoded parameters lie inside ``space`` (used to warm-start a stage)."""
    for p in space:
        if p.name not in params:
            return False
        value = params[p.name]
        if p.kind == "categorical":
            if to_optuna(value) not in [to_optuna(c) for c in p.choices]:
                return False
            continue
        r = p.int_ or p.float_
        assert r is not None
        if value is None or not (r.low <= value <= r.high):
            return False
    return True
