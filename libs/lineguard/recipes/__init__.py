"""Recipes as versioned bundles (docs/recipes.md): the bundle and its sha256 (bundle.py), the JetStream store of
versions and activations (store.py), and what a running service judges by (live.py)."""

from lineguard.recipes.bundle import (
    RecipeError,
    RecipeVersion,
    RuleChange,
    diff,
    parse_bundle,
    parse_ref,
    read_bundle,
    recipe_sha256,
    rule_changes,
    rule_text,
)
from lineguard.recipes.live import LiveRecipes
from lineguard.recipes.store import Activation, RecipeStore, provision_recipes

__all__ = [
    "Activation",
    "LiveRecipes",
    "RecipeError",
    "RecipeStore",
    "RecipeVersion",
    "RuleChange",
    "diff",
    "parse_bundle",
    "parse_ref",
    "provision_recipes",
    "read_bundle",
    "recipe_sha256",
    "rule_changes",
    "rule_text",
]
