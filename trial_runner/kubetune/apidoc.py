"""The API reference (docs/api.md), generated from the pydantic models like the CRDs.

`python -m kubetune.apidoc [FILE]` writes it (default docs/api.md); a test fails when the
committed file is stale.
"""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from kubetune.api import ModelComparisonSpec, ModelComparisonStatus, TuningJobSpec, TuningJobStatus
from kubetune.api.base import API_VERSION

ROOTS: list[tuple[str, type[BaseModel]]] = [
    ("TuningJob spec", TuningJobSpec),
    ("TuningJob status", TuningJobStatus),
    ("ModelComparison spec", ModelComparisonSpec),
    ("ModelComparison status", ModelComparisonStatus),
]


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models(arg)]


def _type(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        parts = [_type(a) for a in get_args(annotation) if a is not type(None)]
        return " \\| ".join(dict.fromkeys(parts))
    if origin is list:
        return f"list of {_type(get_args(annotation)[0])}"
    if origin is dict:
        return "map"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    names = {int: "integer", float: "number", str: "string", bool: "boolean"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        return ""
    if field.default is PydanticUndefined or field.default is None:
        return ""
    value = field.default
    return f"`{str(value).lower() if isinstance(value, bool) else value}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render() -> str:
    """The whole reference as Markdown."""
    out = [
        "# API reference",
        "",
        f"Group `{API_VERSION}`, kinds `TuningJob` (short name `tj`) and `ModelComparison` "
        "(`mc`). Generated from the pydantic models by `python -m kubetune.apidoc`; do not edit.",
        "",
    ]
    seen: set[type[BaseModel]] = set()
    for title, root in ROOTS:
        out += [f"## {title}", ""]
        queue = [root]
        while queue:
            model = queue.pop(0)
            if model in seen:
                continue
            seen.add(model)
            out += [f"### {model.__name__}", ""]
            doc = (model.__doc__ or "").strip().split("\n\n")[0]
            if doc:
                out += [_cell(doc), ""]
            out += ["| field | type | default | description |", "| --- | --- | --- | --- |"]
            for name, field in model.model_fields.items():
                alias = field.alias or name
                out.append(
                    f"| `{alias}` | {_type(field.annotation)} | {_default(field)} | "
                    f"{_cell(field.description or '')} |"
                )
                queue += [m for m in _models(field.annotation) if m not in seen]
            out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0] if args else "docs/api.md")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render())
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
