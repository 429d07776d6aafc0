"""Which recipe version each station judges its next parts by, and the ways to change it.

A station runs its active version in the recipe store (lineguard.recipes: `lineguard recipe activate`, watched
while the gateway runs), else its recipe of the line's YAML. Its PLC may change the product: OPC 40100's
PrepareRecipe names a recipe id, a register PLC (Modbus, S7) writes the recipe's `plc_recipe_number` in its
`recipe` field with the trigger; the station then runs the version of that recipe last activated there. The
station's handshake stamps the recipe, its version and sha256, and its deadline, on every part triggered from
then on. A part already triggered keeps the version it was triggered with, so a change falls between parts, never
in one. A recipe or number the line does not define is refused (UnknownRecipe, reason UNKNOWN_RECIPE) and the
live recipe keeps running."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from lineguard.config import LineConfig
from lineguard.recipes import LiveRecipes, RecipeVersion
from lineguard.services.gateway.handshake import Handshake

log = structlog.get_logger("lineguard.gateway")

UNKNOWN_RECIPE = "UNKNOWN_RECIPE"


class UnknownRecipe(LookupError):
    """The PLC named a recipe (or a recipe number) the line does not have."""

    reason = UNKNOWN_RECIPE


@dataclass(frozen=True)
class Recipe:
    id: str
    version: str
    deadline_ms: int
    sha256: str = ""
    plc_number: int | None = None

    @classmethod
    def of(cls, version: RecipeVersion) -> Recipe:
        s = version.settings
        return cls(version.recipe_id, s.version, s.deadline_ms, version.sha256, s.plc_recipe_number)


class RecipeBook:
    """The line's recipes, and the version each station has prepared (what its handshake stamps on new parts)."""

    def __init__(self, config: LineConfig, handshakes: Mapping[str, Handshake], live: LiveRecipes | None = None):
        self.live = live or LiveRecipes(config)
        self._grace_ms = config.gateway.result_grace_ms
        self._handshakes = handshakes
        for station in handshakes:
            self._stamp(station, self.live.active(station))

    @property
    def recipes(self) -> dict[str, Recipe]:
        """Each recipe the line knows, at the version its stations run."""
        return {rid: Recipe.of(v) for rid, v in self.live.known().items()}

    def find(self, recipe_id: str) -> Recipe:
        recipe = self.recipes.get(recipe_id)
        if recipe is None:
            known = ", ".join(self.recipes) or "none"
            raise UnknownRecipe(f"unknown recipe {recipe_id!r} (the line has: {known})")
        return recipe

    def prepared(self, station: str) -> Recipe:
        handshake = self._handshakes[station]
        version = self.live.cached(handshake.recipe_id, handshake.recipe_version)
        return Recipe.of(version) if version is not None else self.find(handshake.recipe_id)

    def prepare(self, station: str, recipe_id: str) -> Recipe:
        """Judge `station`'s parts triggered from now on by `recipe_id` (the version the station runs of it);
        UnknownRecipe if the line has none."""
        version = self.live.version_for(station, recipe_id)
        if version is None:
            known = ", ".join(self.recipes) or "none"
            raise UnknownRecipe(f"unknown recipe {recipe_id!r} (the line has: {known})")
        if self._stamp(station, version):
            log.info("recipe prepared by the PLC", station=station, recipe=version.ref)
        return Recipe.of(version)

    def select_number(self, station: str, number: int) -> Recipe:
        """A register PLC's `recipe` field: 0 keeps the prepared recipe, another number prepares the recipe whose
        plc_recipe_number it is; UnknownRecipe (the live recipe stays) when no recipe has it."""
        if number == 0:
            return self.prepared(station)
        for recipe_id in self.live.known():
            version = self.live.version_for(station, recipe_id)
            if version is not None and version.settings.plc_recipe_number == number:
                return self.prepare(station, recipe_id)
        numbered = {
            v.settings.plc_recipe_number: rid
            for rid, v in self.live.known().items()
            if v.settings.plc_recipe_number is not None
        }
        known = ", ".join(f"{n} ({rid})" for n, rid in sorted(numbered.items())) or "none"
        raise UnknownRecipe(
            f"PLC recipe number {number} is not defined on this line (numbers: {known}); "
            f"{self.prepared(station).id} keeps running"
        )

    def activated(self, station: str, version: RecipeVersion) -> None:
        """The store made `version` the station's active one (LiveRecipes.follow): parts triggered from now on."""
        if station in self._handshakes:
            self._stamp(station, version)

    def _stamp(self, station: str, version: RecipeVersion) -> bool:
        handshake = self._handshakes[station]
        changed = (handshake.recipe_id, handshake.recipe_sha256) != (version.recipe_id, version.sha256)
        handshake.recipe_id = version.recipe_id
        handshake.recipe_version = version.version
        handshake.recipe_sha256 = version.sha256
        handshake.deadline_ms = version.settings.deadline_ms
        handshake.timeout_s = (version.settings.deadline_ms + self._grace_ms) / 1000
        return changed
