"""The two kinds as whole objects, and loading them from YAML documents."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kubetune.api.base import API_VERSION, ApiModel
from kubetune.api.spec import DNS_LABEL, ModelComparisonSpec, TuningJobSpec
from kubetune.api.status import ModelComparisonStatus, TuningJobStatus


class ObjectMeta(BaseModel):
    """The part of Kubernetes metadata kubetune reads; the rest is kept as it is."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = Field(pattern=DNS_LABEL, max_length=63)
    namespace: str | None = None
    generation: int | None = None
    uid: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class TuningJob(ApiModel):
    """Tune one estimator's hyperparameters on one dataset."""

    api_version: Literal["kubetune.io/v1alpha1"] = "kubetune.io/v1alpha1"
    kind: Literal["TuningJob"] = "TuningJob"
    metadata: ObjectMeta
    spec: TuningJobSpec
    status: TuningJobStatus | None = None


class ModelComparison(ApiModel):
    """Tune several estimators on the same folds and budget, and rank them."""

    api_version: Literal["kubetune.io/v1alpha1"] = "kubetune.io/v1alpha1"
    kind: Literal["ModelComparison"] = "ModelComparison"
    metadata: ObjectMeta
    spec: ModelComparisonSpec
    status: ModelComparisonStatus | None = None


Resource = TuningJob | ModelComparison
KINDS: dict[str, type[TuningJob] | type[ModelComparison]] = {
    "TuningJob": TuningJob,
    "ModelComparison": ModelComparison,
}


class SpecError(ValueError):
    """A resource that cannot be accepted; ``problems`` holds one readable line per mistake."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def load_resource(document: Any) -> Resource:
    """Validate one parsed YAML document as a TuningJob or a ModelComparison.

    Raises:
        SpecError: naming each offending field with what is wrong.
    """
    if not isinstance(document, dict):
        raise SpecError(
            [
                f"expected a mapping with apiVersion, kind, metadata and spec, got "
                f"{type(document).__name__}"
            ]
        )
    api_version = document.get("apiVersion")
    if api_version != API_VERSION:
        raise SpecError([f"apiVersion: expected {API_VERSION!r}, got {api_version!r}"])
    kind = document.get("kind")
    if kind not in KINDS:
        raise SpecError([f"kind: expected TuningJob or ModelComparison, got {kind!r}"])
    try:
        return KINDS[kind].model_validate(document)
    except ValidationError as error:
        raise SpecError(validation_problems(error)) from None


def validation_problems(error: ValidationError) -> list[str]:
    """One line per pydantic error: the field path as written in YAML, then the message."""
    lines = []
    for item in error.errors(include_url=False):
        path = _path(item["loc"])
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        elif message.startswith("Assertion failed, "):
            message = message.removeprefix("Assertion failed, ")
        if item["type"] not in ("missing", "extra_forbidden", "value_error") and "input" in item:
            shown = repr(item["input"])
            if len(shown) <= 60 and not isinstance(item["input"], dict):
                message = f"{message} (got {shown})"
        lines.append(f"{path}: {message}" if path else message)
    return lines


def _path(loc: tuple[Any, ...]) -> str:
    # Union branches show up in loc as type names ("int", "list[...]"); a list index as [i].
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and ("[" in part or part in ("str", "bool", "float")):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out
