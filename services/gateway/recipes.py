"""Which recipe each station judges its next parts by, and the PLC's way to change it.

A station starts with the recipe of its configuration (`stations[].recipe`). A PLC protocol that
lets the PLC pick the product (OPC 40100's PrepareRecipe) changes it here: the station's handshake
then stamps the new recipe, and its deadline, on every part triggered from then on. A part already
triggered keeps the recipe it was triggered with, so a change falls between parts, never in one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from lineguard.config import LineConfig
from lineguard.services.gateway.handshake import Handshake

log = structlog.get_logger("lineguard.gateway")


class UnknownRecipe(LookupError):
    """The PLC named a recipe the line's configuration does not have."""


@dataclass(frozen=True)
class Recipe:
    id: str
    version: str
    deadline_ms: int


class RecipeBook:
    """The line's recipes, and the one each station has prepared (what its handshake stamps on new parts)."""

    def __init__(self, config: LineConfig, handshakes: Mapping[str, Handshake]):
        self.recipes: dict[str, Recipe] = {
            rid: Recipe(rid, r.version, r.deadline_ms) for rid, r in sorted(config.recipes.items())
        }
        self._grace_ms = config.gateway.result_grace_ms
        self._handshakes = handshakes

    def find(self, recipe_id: str) -> Recipe:
        recipe = self.recipes.get(recipe_id)
        if recipe is None:
            known = ", ".join(self.recipes) or "none"
            raise UnknownRecipe(f"unknown recipe {recipe_id!r} (the line has: {known})")
        return recipe

    def prepared(self, station: str) -> Recipe:
        return self.find(self._handshakes[station].recipe_id)

    def prepare(self, station: str, recipe_id: str) -> Recipe:
        """Judge `station`'s parts triggered from now on by `recipe_id`; UnknownRecipe if the line has none."""
        recipe = self.find(recipe_id)
        handshake = self._handshakes[station]
        previous = handshake.recipe_id
        handshake.recipe_id = recipe.id
        handshake.timeout_s = (recipe.deadline_ms + self._grace_ms) / 1000
        if previous != recipe.id:
            log.info("recipe prepared by the PLC", station=station, recipe=recipe.id, previous=previous)
        return recipe
