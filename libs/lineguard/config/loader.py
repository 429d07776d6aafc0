"""Reading the line's YAML, with errors that name the file line and field path."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lineguard.config.model import LineConfig

ENV_CONFIG_PATH = "LINEGUARD_CONFIG"


@dataclass(frozen=True)
class Problem:
    path: str  # "stations[0].camera.px_per_mm"
    message: str
    line: int | None  # 1-based line in the file, None when the value came from elsewhere

    def render(self, file: str) -> str:
        where = f"{file}:{self.line}" if self.line else file
        return f"{where}: {self.path or '<top>'}: {self.message}"


class ConfigError(Exception):
    """The configuration cannot be used; `problems` says each reason and where."""

    def __init__(self, file: str, problems: list[Problem]):
        self.file = file
        self.problems = problems
        super().__init__("\n".join(p.render(file) for p in problems))


def load_config(path: str | os.PathLike[str] | None = None) -> LineConfig:
    """Load and validate the line's YAML (or `$LINEGUARD_CONFIG`), environment applied."""
    if path is None:
        path = os.environ.get(ENV_CONFIG_PATH)
    if path is None:
        raise ConfigError(
            "<no file>", [Problem("", f"no configuration file given (--config or ${ENV_CONFIG_PATH})", None)]
        )
    file = str(path)
    try:
        text = Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(file, [Problem("", f"cannot read the file: {exc.strerror or exc}", None)]) from None
    return parse_config(text, file)


def parse_config(text: str, file: str = "<string>") -> LineConfig:
    root, data = parse_mapping(text, file)
    try:
        return LineConfig(**data)
    except ValidationError as exc:
        raise validation_error(file, exc, root) from None


def parse_mapping(text: str, file: str = "<string>") -> tuple[yaml.Node | None, dict[str, Any]]:
    """A YAML document that must hold a mapping: its node tree (for `validation_error`'s lines) and its data."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(
            file, [Problem("", f"not valid YAML: {getattr(exc, 'problem', None) or exc}", line)]
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(file, [Problem("", f"the file must hold a mapping, not a {type(data).__name__}", 1)])
    return root, data


def validation_error(file: str, exc: ValidationError, root: yaml.Node | None) -> ConfigError:
    """pydantic's errors as problems naming the file line and the field path of each."""
    return ConfigError(file, [_problem(err, root) for err in exc.errors()])


def _problem(err: Any, root: yaml.Node | None) -> Problem:
    loc = [part for part in err["loc"]]
    message = err["msg"]
    if (
        err.get("type") not in ("missing", "extra_forbidden")
        and "input" in err
        and not isinstance(err["input"], dict | list)
    ):
        message = f"{message} (got {err['input']!r})"
    if err.get("type") == "extra_forbidden":
        message = "unknown field (check its spelling)"
    return Problem(_render_path(loc), message, line_of(root, loc))


def _render_path(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def line_of(node: yaml.Node | None, loc: list[Any]) -> int | None:
    """The line of the deepest YAML node along `loc` (the field, or its parent when missing)."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    child = value
                    line = key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
        if child is None:
            return line
        node = child
        if not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            line = node.start_mark.line + 1
    return line
