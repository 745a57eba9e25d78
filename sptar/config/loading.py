"""Loading a pipeline YAML (with ``--set`` overrides) into a :class:`Config`, and its errors
that name the file, the line and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sptar.config.pipeline import Config
from sptar.errors import SptarError

PIPELINES_DIR = Path("pipelines")


def resolve_config_path(name_or_path: str | Path) -> Path:
    """``scifact-quick`` means ``pipelines/scifact-quick.yaml``; a path is taken as it is."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml") and not path.exists():
        path = PIPELINES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PIPELINES_DIR.glob("*.yaml"))) or "none"
        raise SptarError(f"{path}: config file not found (fix: pick one of pipelines/: {known})")
    return path


def load_config(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    path = resolve_config_path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SptarError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})"
                         " (fix: re-encode the file as UTF-8)") from None
    try:
        raw = yaml.safe_load(text)
        lines = _key_lines(yaml.compose(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        detail = " ".join(str(getattr(exc, "problem", None) or getattr(exc, "reason", None)
                              or exc).split())
        raise SptarError(f"{where}: not valid YAML ({detail}) (fix: correct the YAML syntax)") from None
    if not isinstance(raw, dict):
        raise SptarError(f"{path}: expected a mapping of sections at the top level"
                         " (fix: see pipelines/scifact-quick.yaml)")
    raw.setdefault("experiment", path.stem)
    from_override: set[str] = set()
    for item in overrides:
        key = _apply_override(raw, item)
        from_override.add(key)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise _config_error(path, exc, lines, from_override) from None


def _apply_override(raw: dict[str, Any], item: str) -> str:
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise SptarError(f"--set {item!r}: expected section.key=value"
                         " (fix: e.g. --set split.n_prompt_train=20)")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SptarError(f"--set {item!r}: '{part}' is a value, not a section"
                             " (fix: name a key inside a section)")
        node = child
    node[parts[-1]] = parsed
    return key


def _key_lines(node: yaml.Node | None, prefix: str = "") -> dict[str, int]:
    """Map every dotted key of a YAML document to its 1-based line number."""
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            lines[key] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, key + "."))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            key = f"{prefix}{index}"
            lines[key] = item.start_mark.line + 1
            lines.update(_key_lines(item, key + "."))
    return lines


def _config_error(path: Path, exc: ValidationError, lines: dict[str, int],
                  from_override: set[str]) -> SptarError:
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        message = "unknown key"
        fix = "remove it or check its spelling against pipelines/scifact-quick.yaml"
    elif error["type"] == "missing":
        message = "missing required key"
        fix = "add it"
    else:
        message = error["msg"]
        if "input" in error and not isinstance(error["input"], dict):
            message += f" (got {error['input']!r})"
        fix = "correct the value"
    overridden = next((k for k in from_override if key == k or key.startswith(k + ".")), None)
    if overridden:
        where = f"--set {overridden}"
    else:
        line = _nearest_line(key, lines)
        where = f"{path}:{line}" if line else str(path)
    return SptarError(f"{where}: key '{key}': {message} (fix: {fix})")


def _nearest_line(key: str, lines: dict[str, int]) -> int | None:
    parts = key.split(".")
    while parts:
        line = lines.get(".".join(parts))
        if line:
            return line
        parts.pop()
    return None
