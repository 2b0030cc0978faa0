"""The pipeline template's field reference, written from the models themselves.

``docs/pipeline-template-reference.md`` is this module's output (``python -m
pclean_provider.pipeline.template_reference > docs/pipeline-template-reference.md``); a test keeps
the two equal, so the reference cannot drift from what the templates accept.
"""

from __future__ import annotations

import json
import sys
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from pclean_provider.pipeline.pipeline_template import PipelineTemplate


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    candidates = (annotation, *typing.get_args(annotation))
    return next((a for a in candidates if isinstance(a, type) and issubclass(a, BaseModel)), None)


def _type_text(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_text(a) for a in args)
    if origin is list:
        return "list of " + _type_text(args[0])
    if origin is typing.Annotated:
        return _type_text(args[0])
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and origin is None:
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace("NoneType", "null")


def _default_text(field: Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return "(section)"
    return f"`{json.dumps(value, default=str)}`"


def _one_line(text: str | None) -> str:
    text = " ".join((text or "").split()).replace("|", "\\|")
    return text.replace("<", "&lt;").replace(">", "&gt;")


def rows(model: type[BaseModel] = PipelineTemplate, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) of every field, sections followed by their own fields."""
    out = []
    for name, field in model.model_fields.items():
        nested = _nested_model(field.annotation)
        is_section = nested is not None and typing.get_origin(field.annotation) is not list
        out.append((prefix + name, "section" if is_section else _type_text(field.annotation),
                    _default_text(field), _one_line(field.description or (nested.__doc__ if nested else ""))))
        if is_section:
            out.extend(rows(nested, prefix + name + "."))
    return out


def render() -> str:
    lines = [
        "# Pipeline template reference",
        "",
        "Every key a pipeline template (`pclean_provider/data/pipelines/*.yaml`, or a site's own in",
        "`[pclean] pipelines_dir`) accepts; a key not listed here is refused with its name. Written from",
        "the models by `python -m pclean_provider.pipeline.template_reference`; do not edit by hand.",
        "",
        "| key | type | default | what it sets |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{key}` | {kind} | {default} | {text} |" for key, kind, default, text in rows()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
