"""The two kinds as whole objects, and loading them from YAML documents."""

from __future__ import annotations

import re
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
    """One line per pydantic error: the field path as written in YAML, then the message.

    The failures of every member of a union (a categorical choice, a quantity) become one line.
    """
    items = list(error.errors(include_url=False))
    unions: dict[tuple[Any, ...], list[Any]] = {}
    for item in items:
        if _is_union_member(item):
            unions.setdefault(tuple(item["loc"][:-1]), []).append(item)
    lines = []
    reported: set[tuple[Any, ...]] = set()
    for item in items:
        prefix = tuple(item["loc"][:-1])
        if len(unions.get(prefix, [])) > 1:
            if prefix not in reported:
                reported.add(prefix)
                kinds = _union_kinds(unions[prefix])
                lines.append(f"{_path(prefix)}: expected {kinds} (got {item['input']!r})")
            continue
        lines.append(_line(item))
    return lines


def _is_union_member(item: Any) -> bool:
    tag = item["loc"][-1] if item["loc"] else None
    return (
        isinstance(tag, str)
        and (tag in _TYPE_TAGS or "[" in tag)
        and str(item["type"]).endswith(("_type", "_parsing"))
    )


_TYPE_TAGS = {
    "int": "a whole number",
    "float": "a number",
    "str": "a string",
    "bool": "a boolean",
    "none": "null",
}


def _union_kinds(items: list[Any]) -> str:
    kinds = []
    for item in items:
        tag = item["loc"][-1]
        kind = _TYPE_TAGS.get(tag, "a list of those" if tag.startswith("list") else tag)
        if kind not in kinds:
            kinds.append(kind)
    if "a whole number" in kinds and "a number" in kinds:
        kinds.remove("a whole number")
    return ", ".join(kinds[:-1]) + f" or {kinds[-1]}" if len(kinds) > 1 else kinds[0]


def _line(item: Any) -> str:
    path = _path(item["loc"])
    message = item["msg"]
    kind = item["type"]
    if kind == "extra_forbidden":
        message = "unknown field"
    elif message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
        # A validator of a whole object may name the field to blame: "scoring.metric: ...".
        head, sep, rest = message.partition(": ")
        if sep and _FIELD.match(head):
            path, message = (f"{path}.{head}" if path else head), rest
    elif message.startswith("Assertion failed, "):
        message = message.removeprefix("Assertion failed, ")
    elif kind == "string_pattern_mismatch" and item["ctx"].get("pattern") == DNS_LABEL:
        message = (
            "must be lowercase letters, digits and '-', starting and ending with a letter or digit"
        )
    if kind not in ("missing", "extra_forbidden", "value_error") and "input" in item:
        shown = repr(item["input"])
        if len(shown) <= 60 and not isinstance(item["input"], dict):
            message = f"{message} (got {shown})"
    return f"{path}: {message}" if path else message


_FIELD = re.compile(r"^[a-z][A-Za-z0-9]*(\.[a-z][A-Za-z0-9]*)*$")


def _path(loc: tuple[Any, ...]) -> str:
    # A list index shows as [i]; a union member's tag (such as "list[...]") is dropped.
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and "[" in part:
            continue
        else:
            out += f".{part}" if out else str(part)
    return out
