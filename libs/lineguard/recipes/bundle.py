"""One recipe version as a bundle: its id, version and settings (RecipeSettings), identified by its sha256.

Plain data and functions, no bus: the store (store.py) keeps these, the CLI reads them from files, the services
judge by them. A version's sha256 is its settings as canonical JSON (keys sorted, no spaces), hashed: the one
function the results service also names every recipe version by, so two records with the same sha256 were judged
by the same rules."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lineguard.config import ConfigError, Problem, RecipeSettings
from lineguard.config.loader import line_of, parse_mapping, validation_error
from lineguard.config.rules import ResolvedRule, resolve_rule

RECIPE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # a key token: no "." (it separates id and version in the key)
VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class RecipeError(RuntimeError):
    """A recipe version refused, or not found; the message says why (and `reason`, a code, what kind of refusal)."""

    def __init__(self, message: str, reason: str = "RECIPE_REFUSED"):
        super().__init__(message)
        self.reason = reason


def recipe_sha256(recipe: RecipeSettings) -> str:
    """The recipe's settings as canonical JSON, hashed: two versions with the same hash judge alike."""
    canonical = json.dumps(recipe.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_names(recipe_id: str, version: str) -> None:
    if not RECIPE_ID.match(recipe_id):
        raise RecipeError(f"recipe id {recipe_id!r}: 1 to 64 letters, digits, '_' or '-'", "RECIPE_INVALID")
    if not VERSION.match(version):
        raise RecipeError(
            f"recipe {recipe_id} version {version!r}: 1 to 64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit",
            "RECIPE_INVALID",
        )


def parse_ref(ref: str) -> tuple[str, str]:
    """ "pcb-a@2" -> ("pcb-a", "2")."""
    recipe_id, at, version = ref.partition("@")
    if not at or not recipe_id or not version:
        raise RecipeError(f"{ref!r}: name a recipe version as ID@VERSION (e.g. pcb-a@2)", "RECIPE_INVALID")
    check_names(recipe_id, version)
    return recipe_id, version


@dataclass(frozen=True)
class RecipeVersion:
    """A recipe version as stored: who pushed it when, and its sha256."""

    recipe_id: str
    settings: RecipeSettings
    sha256: str
    pushed_by: str = ""
    pushed_at: str = ""

    @property
    def version(self) -> str:
        return self.settings.version

    @property
    def ref(self) -> str:
        return f"{self.recipe_id}@{self.version}"

    @classmethod
    def of(cls, recipe_id: str, settings: RecipeSettings, *, pushed_by: str = "", pushed_at: str = "") -> RecipeVersion:
        check_names(recipe_id, settings.version)
        return cls(recipe_id, settings, recipe_sha256(settings), pushed_by, pushed_at)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "recipe_id": self.recipe_id,
                "version": self.version,
                "sha256": self.sha256,
                "pushed_by": self.pushed_by,
                "pushed_at": self.pushed_at,
                "settings": self.settings.model_dump(mode="json"),
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> RecipeVersion:
        """A stored version, checked again: valid settings, and the sha256 they hash to (nothing changed them)."""
        try:
            data = json.loads(raw)
            settings = RecipeSettings(**data["settings"])
            stored = cls(str(data["recipe_id"]), settings, str(data["sha256"]), data["pushed_by"], data["pushed_at"])
        except (ValueError, KeyError, TypeError) as exc:  # ValidationError is a ValueError
            raise RecipeError(
                f"{where}: not a recipe version ({type(exc).__name__}: {exc})", "RECIPE_INVALID"
            ) from None
        if recipe_sha256(settings) != stored.sha256:
            raise RecipeError(f"{where}: its settings do not hash to its sha256 {stored.sha256}", "RECIPE_INVALID")
        return stored


def parse_bundle(text: str, file: str = "<string>") -> RecipeVersion:
    """A recipe version file: `id:` and the recipe's settings (as under `recipes.<id>` in the line's YAML, with
    `version:`). ConfigError naming the file line and field path of every problem."""
    root, data = parse_mapping(text, file)
    recipe_id = data.pop("id", None)
    problems = []
    if not isinstance(recipe_id, str) or not RECIPE_ID.match(recipe_id):
        problems.append(
            Problem(
                "id", f"the recipe's id: 1 to 64 letters, digits, '_' or '-' (got {recipe_id!r})", line_of(root, ["id"])
            )
        )
    if "version" not in data:
        problems.append(Problem("version", "a recipe version file names its version", 1))
    try:
        settings = RecipeSettings(**data)
    except ValidationError as exc:
        raise ConfigError(file, problems + validation_error(file, exc, root).problems) from None
    if not VERSION.match(settings.version):
        problems.append(
            Problem(
                "version",
                f"1 to 64 letters, digits, '.', '_' or '-' (got {settings.version!r})",
                line_of(root, ["version"]),
            )
        )
    if problems:
        raise ConfigError(file, problems)
    assert isinstance(recipe_id, str)
    return RecipeVersion.of(recipe_id, settings)


def read_bundle(path: str | Path) -> RecipeVersion:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [Problem("", f"cannot read the file: {exc.strerror or exc}", None)]) from None
    return parse_bundle(text, str(path))


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}, "c": [2]} -> {"a.b": 1, "c[0]": 2}: the field paths a diff names."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(data, list) and data:
        out = {}
        for i, value in enumerate(data):
            out.update(flatten(value, f"{prefix}[{i}]"))
        return out
    return {prefix: data}


def diff(a: RecipeVersion, b: RecipeVersion) -> list[tuple[str, Any, Any]]:
    """(field path, a's value, b's value) for every setting that differs, by path; a missing side is None."""
    left, right = flatten(a.settings.model_dump(mode="json")), flatten(b.settings.model_dump(mode="json"))
    return [
        (path, left.get(path), right.get(path)) for path in sorted(left | right) if left.get(path) != right.get(path)
    ]


@dataclass(frozen=True)
class RuleChange:
    """What one class gets in one place in two versions, as the decision service resolves it: outside every zone
    (zone "") or in a zone; a rule None where that version has no zone of that name judging."""

    class_name: str | None  # None: any class neither version names
    zone: str
    a: ResolvedRule | None
    b: ResolvedRule | None
    listed: tuple[bool, bool]  # whether each version lists the class in its `classes`


def rule_changes(a: RecipeVersion, b: RecipeVersion) -> list[RuleChange]:
    """Every class whose effective rule differs between two versions (verdict and thresholds after defaults,
    lineguard.config.rules.resolve_rule), outside the zones and in each zone either judges by. The raw settings
    do not say it: a class a version stops listing goes from its rule to failing at the recipe's min_score."""
    versions = (a.settings, b.settings)
    named = sorted({c for v in versions for c in [*v.classes, *(c for z in v.zones.values() for c in z.classes)]})
    other = "?"  # a name neither version gives a rule: what every class the recipes leave out gets
    while other in named:
        other += "?"
    zones = sorted({name for v in versions for name, zone in v.zones.items() if zone.kind != "ignored"})

    def rule(settings: RecipeSettings, class_name: str, name: str) -> ResolvedRule | None:
        zone = settings.zones.get(name) if name else None
        if name and (zone is None or zone.kind == "ignored"):
            return None
        return resolve_rule(settings, class_name, name, zone)

    changes = []
    for name in ["", *zones]:
        for class_name in [*named, other]:
            was, now = (rule(v, class_name, name) for v in versions)
            if was != now:
                listed = (class_name in a.settings.classes, class_name in b.settings.classes)
                changes.append(RuleChange(None if class_name == other else class_name, name, was, now, listed))
    return changes


def rule_text(rule: ResolvedRule | None) -> str:
    """What a class gets, in a line: `rework at min_score 0.7, area ≥ 0.05 mm², up to 2 allowed`."""
    if rule is None:
        return "no such zone"
    if rule.verdict == "ignore":
        return "ignore"
    text = f"{rule.verdict} at min_score {rule.min_score:g}"
    if rule.min_area_mm2 is not None:
        text += f", area ≥ {rule.min_area_mm2:g} mm²"
    if rule.min_area_px is not None:
        text += f", area ≥ {rule.min_area_px:g} px²"
    if rule.max_count:
        text += f", up to {rule.max_count} allowed"
    return text
