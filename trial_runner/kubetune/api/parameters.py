"""Typed search-space parameters: an int range, a float range or a list of categorical choices.

Like optuna's distributions, each value object checks its own invariants and echoes the bad value.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator
from pydantic.json_schema import JsonDict, JsonValue

from kubetune.api.base import ApiModel

# A categorical choice is a JSON scalar, null, or a short list of scalars (for example an MLP's
# ``hidden_layer_sizes``). Order matters in the union: bool before int, int before float.
Scalar = bool | int | float | str
Choice = Scalar | list[Scalar] | None

PARAM_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
MAX_PARAMETERS = 64
MAX_CHOICES = 256

# CEL rules (x-kubernetes-validations) that repeat the validators below in the CRD, so that the API
# server rejects a bad range before the operator sees it. `int` and `float` are not CEL reserved
# words: Kubernetes exposes them as `self.int` and `self.float`, unescaped. Absent fields have no
# value in CEL (defaults are not in the CRD), hence the `has()` guards. Literals match the field
# type (0 for integers, 0.0 for numbers): CEL does not compare an int with a double everywhere.


def _range_rules(zero: str) -> list[JsonValue]:
    return [
        {
            "rule": "self.low < self.high",
            "message": "low must be below high",
            "messageExpression": "'low (' + string(self.low) + ') must be below high ('"
            " + string(self.high) + ')'",
        },
        {
            "rule": f"!has(self.log) || !self.log || self.low > {zero}",
            "message": "a log range needs low > 0",
            "messageExpression": "'a log range needs low > 0, got low=' + string(self.low)",
        },
        {
            "rule": "!has(self.log) || !self.log || !has(self.step)",
            "message": "log and step cannot be used together",
        },
    ]


_INT_STEP_RULE: JsonDict = {
    "rule": "!has(self.step) || (self.high - self.low) % self.step == 0",
    "message": "high - low must be a multiple of step",
}
_PARAMETER_RULE: JsonDict = {
    "rule": "(has(self.int) ? 1 : 0) + (has(self.float) ? 1 : 0)"
    " + (has(self.categorical) ? 1 : 0) == 1",
    "message": "a parameter must set exactly one of int, float or categorical",
    "messageExpression": "'parameter ' + self.name"
    " + ' must set exactly one of int, float or categorical'",
}


class IntRange(ApiModel):
    """An integer range, both ends included."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [*_range_rules("0"), _INT_STEP_RULE]}
    )

    low: int
    """Smallest value."""
    high: int
    """Largest value; must be above low."""
    step: int | None = Field(default=None, ge=1)
    """Spacing of the values from low (default 1); high - low must be a multiple of it."""
    log: bool = False
    """Sample on a log scale; needs low >= 1 and no step."""

    @model_validator(mode="after")
    def _check(self) -> IntRange:
        _check_bounds(self.low, self.high, self.log, self.step)
        if self.step is not None and (self.high - self.low) % self.step != 0:
            raise ValueError(
                f"high - low ({self.high} - {self.low}) must be a multiple of step ({self.step})"
            )
        return self


class FloatRange(ApiModel):
    """A real range, both ends included."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _range_rules("0.0")})

    low: float
    """Smallest value."""
    high: float
    """Largest value; must be above low."""
    step: float | None = Field(default=None, gt=0)
    """Optional spacing of the values from low."""
    log: bool = False
    """Sample on a log scale; needs low > 0 and no step."""

    @model_validator(mode="after")
    def _check(self) -> FloatRange:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"low and high must be finite, got {self.low} and {self.high}")
        _check_bounds(self.low, self.high, self.log, self.step)
        return self


def _check_bounds(low: float, high: float, log: bool, step: float | None) -> None:
    if low >= high:
        raise ValueError(f"low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise ValueError(f"a log range needs low > 0, got low={low}")
    if log and step is not None:
        raise ValueError("log and step cannot be used together")


ParameterKind = Literal["int", "float", "categorical"]


class Parameter(ApiModel):
    """One tuned hyperparameter of the estimator: exactly one of int, float or categorical."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [_PARAMETER_RULE]})

    name: str = Field(pattern=PARAM_NAME_PATTERN, max_length=128)
    """The estimator's constructor argument, as in scikit-learn's get_params()."""
    int_: IntRange | None = Field(default=None, alias="int")
    """An integer range."""
    float_: FloatRange | None = Field(default=None, alias="float")
    """A real range."""
    categorical: list[Choice] | None = Field(default=None, min_length=1, max_length=MAX_CHOICES)
    """A list of choices: numbers, strings, booleans, null, or short lists of those."""

    @model_validator(mode="after")
    def _exactly_one(self) -> Parameter:
        given = [k for k in ("int", "float", "categorical") if self._field(k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"parameter {self.name!r} must set exactly one of int, float or categorical, "
                f"got {given or 'none'}"
            )
        if self.categorical is not None:
            keys = [choice_key(c) for c in self.categorical]
            if len(set(keys)) != len(keys):
                raise ValueError(f"parameter {self.name!r} repeats a categorical choice")
        return self

    def _field(self, kind: str) -> Any:
        return {"int": self.int_, "float": self.float_, "categorical": self.categorical}[kind]

    @property
    def kind(self) -> ParameterKind:
        if self.int_ is not None:
            return "int"
        if self.float_ is not None:
            return "float"
        return "categorical"

    @property
    def choices(self) -> list[Choice]:
        """The categorical choices; empty for a numeric parameter."""
        return list(self.categorical or [])


def choice_key(value: Choice) -> str:
    """A stable, hashable key for a categorical choice (optuna needs scalar choices)."""
    return json.dumps(value, sort_keys=True)
