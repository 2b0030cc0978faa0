"""Turn pydantic's ValidationError into a ConfigError a user can act on.

pydantic reports a bad union value once per union member, with locations such as
('image', 'imsize', 'list[int]', 0); users think in flat tclean names, so errors are regrouped
by parameter and phrased from the field's type, not from pydantic's internals.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError

from pclean_provider.config.errors import ConfigError
from pclean_provider.config.sections import SECTIONS


def describe_type(annotation: Any) -> str:
    """A short English phrase for a field type: 'an integer or a list of integers'."""
    origin = get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        parts = [describe_type(a) for a in get_args(annotation) if a is not type(None)]
        text = " or ".join(parts)
        return text + " or null" if type(None) in get_args(annotation) else text
    if origin is list:
        (inner,) = get_args(annotation) or (Any,)
        return "a list of " + _plural(describe_type(inner))
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        annotation, getattr(annotation, "__name__", str(annotation)))


def _plural(phrase: str) -> str:
    for single, plural in (("an integer", "integers"), ("a number", "numbers"), ("a string", "strings")):
        phrase = phrase.replace(single, plural)
    return phrase


def _field_annotation(sections: dict[str, type[BaseModel]], section: str, name: str) -> Any:
    model = sections.get(section)
    if model is None or name not in model.model_fields:
        return None
    return model.model_fields[name].annotation


def translate_validation_error(exc: ValidationError, flat_names: dict[str, str]) -> ConfigError:
    by_parameter: dict[str, list[dict[str, Any]]] = {}
    passthrough: list[ConfigError] = []
    for error in exc.errors():
        original = (error.get("ctx") or {}).get("error")
        if isinstance(original, ConfigError):
            passthrough.append(original)
            continue
        loc = [str(part) for part in error["loc"]]
        if len(loc) >= 2 and loc[0] in SECTIONS:
            name = loc[1]
        elif loc:
            name = loc[0]
        else:
            name = "configuration"
        by_parameter.setdefault(name, []).append(error)

    lines: list[str] = [str(e) for e in passthrough]
    names: list[str] = [p for e in passthrough for p in e.parameters]
    for name, errors in by_parameter.items():
        names.append(name)
        lines.append(_one_parameter(name, errors, flat_names, SECTIONS))
    if len(lines) == 1:
        return ConfigError(lines[0], parameters=names)
    return ConfigError(f"{len(lines)} problems in the configuration:\n  " + "\n  ".join(lines),
                       parameters=names)


def _one_parameter(name: str, errors: list[dict[str, Any]], flat_names: dict[str, str],
                   sections: dict[str, type[BaseModel]]) -> str:
    # Our own validators say exactly what is wrong and how to fix it: prefer their words.
    for error in errors:
        if error["type"] == "value_error":
            message = str((error.get("ctx") or {}).get("error") or error["msg"])
            return f"{name}: {message}"
    first = errors[0]
    if first["type"] == "extra_forbidden":
        close = difflib.get_close_matches(name, list(flat_names), n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        return f"{name}: unknown parameter{hint}; `pclean --help` lists them all"
    value = first.get("input")
    annotation = _field_annotation(sections, flat_names.get(name, ""), name)
    for error in errors:
        if error["type"] in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
            return f"{name}: {value!r} is out of range ({error['msg'].lower()})"
    if annotation is None:
        return f"{name}: {first['msg']}"
    expected = describe_type(annotation)
    hint = ""
    if get_origin(annotation) is Literal and isinstance(value, str):
        close = difflib.get_close_matches(value, [str(v) for v in get_args(annotation)], n=1, cutoff=0.5)
        if close:
            hint = f" (did you mean {close[0]!r}?)"
    return f"{name}: {value!r} is not valid; expected {expected}{hint}"
