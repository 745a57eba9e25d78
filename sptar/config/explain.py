"""``sptar config --explain``: every resolved config value beside its default and its meaning.

One entry per key, ``key = value  (default)  meaning`` when the value is the default, or
``key = value  (default <its default>)  meaning`` when the pipeline or ``--set`` changed it;
a section (and a filter step) is a heading line before its keys. Entries wrap at :data:`WIDTH`
columns, continuation lines indented.
"""

from __future__ import annotations

import json
import textwrap
import types
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from sptar.config.base import Section
from sptar.config.pipeline import Config
from sptar.config.sections_filter import FilterStep

WIDTH = 100
INDENT = "    "
# the defaults that load_config fills in, not the model
LOADER_DEFAULTS = {"experiment": "the pipeline file's name"}


def explain(cfg: Config, width: int = WIDTH) -> str:
    """The whole config, one wrapped entry per key (see the module docstring)."""
    wrapper = textwrap.TextWrapper(width=width, subsequent_indent=INDENT, break_long_words=False,
                                   break_on_hyphens=False)
    return "".join(line + "\n" for line in _section(cfg, "", wrapper))


def _section(model: BaseModel, prefix: str, wrapper: textwrap.TextWrapper) -> list[str]:
    lines: list[str] = []
    for name, field in type(model).model_fields.items():
        key, value = prefix + name, getattr(model, name)
        if isinstance(value, Section) and not prefix:  # a top-level section
            lines += ["", *wrapper.wrap(f"# {key}: {field.description}")]
            lines += _section(value, key + ".", wrapper)
        elif isinstance(value, Section):  # a section inside one (dataset.corpus)
            lines += wrapper.wrap(f"{key}:  {_default(key, value, field)}  {_meaning(field)}")
            lines += _section(value, key + ".", wrapper)
        elif value and isinstance(value, list) and all(isinstance(v, FilterStep) for v in value):
            lines += wrapper.wrap(f"{key}:  {_default(key, value, field)}  {_meaning(field)}")
            for index, step in enumerate(value):
                step_field = FilterStep.model_fields[step.name]
                lines += wrapper.wrap(f"{key}.{index} = {step.name}  {step_field.description}")
                lines += _section(step.params, f"{key}.{index}.{step.name}.", wrapper)
        else:
            lines += wrapper.wrap(f"{key} = {show(value)}  {_default(key, value, field)}"
                                  f"  {_meaning(field)}")
    return lines


def _default(key: str, value: Any, field: FieldInfo) -> str:
    if key in LOADER_DEFAULTS:
        return f"(default: {LOADER_DEFAULTS[key]})"
    if field.is_required():
        return "(required)"
    return "(default)" if value == field.default else f"(default {show(field.default)})"


def _meaning(field: FieldInfo) -> str:
    choices = _choices(field.annotation)
    if not choices:
        return field.description or ""
    each = "each " if get_origin(field.annotation) is list else ""
    return f"{field.description} ({each}one of: {', '.join(choices)})"


def _choices(annotation: Any) -> list[str]:
    """The allowed values of a Literal field (also inside list[...] or ... | None), else []."""
    origin = get_origin(annotation)
    if origin is Literal:
        return [str(arg) for arg in get_args(annotation)]
    if origin is list:
        return _choices(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        return _choices(args[0]) if len(args) == 1 else []
    return []


def show(value: Any) -> str:
    """A value as one would write it in the pipeline YAML, on one line."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return value if _reads_back(value) else json.dumps(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return str(value)


def _reads_back(text: str) -> bool:
    """Whether ``text`` unquoted in a YAML flow value reads back as the same string."""
    if not text or text != text.strip() or any(c in text for c in ",[]{}#"):
        return False
    try:
        return yaml.safe_load(text) == text
    except yaml.YAMLError:
        return False
