"""The recipe versions a running service judges by (the gateway, the decision service): each station's active
version, followed in the store as it changes, and every version a part names.

A part carries the recipe version it was triggered with (Part.recipe_version / recipe_sha256, stamped by the
gateway from the station's active version then); a service judges it by that version whatever is activated
meanwhile, so a change takes effect between parts, never during one. Without an activation in the store (or
without a store: a line that has none yet), a station runs its recipe of the line's YAML: the YAML seeds the store.

An activation that cannot be taken in (a version the store lacks, a record that is not one) is logged and skipped:
the live recipe keeps running."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from lineguard.config import LineConfig
from lineguard.recipes.bundle import RecipeError, RecipeVersion, recipe_sha256
from lineguard.recipes.store import Activation, RecipeStore
from lineguard.v1.common_pb2 import Part

log = structlog.get_logger("lineguard.recipes")

OnChange = Callable[[str, RecipeVersion], Awaitable[None] | None]
_RETRY_S = 1.0


class LiveRecipes:
    def __init__(self, config: LineConfig, store: RecipeStore | None = None):
        self.line = config.line
        self.store = store
        # The YAML's versions; the store's, once fetched, come first (the store is what an operator changed).
        self._seeded = {(rid, s.version): RecipeVersion(rid, s, recipe_sha256(s)) for rid, s in config.recipes.items()}
        self._fetched: dict[tuple[str, str], RecipeVersion] = {}
        self._active: dict[str, RecipeVersion] = {
            s.id: self._seeded[(s.recipe, config.recipe(s.recipe).version)] for s in config.stations
        }
        self._station_versions: dict[str, dict[str, str]] = {s.id: {} for s in config.stations}

    def active(self, station: str) -> RecipeVersion:
        """The version `station` judges the parts triggered now by."""
        return self._active[station]

    def known(self) -> dict[str, RecipeVersion]:
        """Each recipe id the line knows, at the version its stations run (else the YAML's)."""
        out = {rid: v for (rid, _), v in sorted(self._seeded.items())}
        for station in sorted(self._active):
            for rid, version in self._station_versions[station].items():
                found = self.cached(rid, version)
                if found is not None:
                    out[rid] = found
            out[self._active[station].recipe_id] = self._active[station]
        return dict(sorted(out.items()))

    def version_for(self, station: str, recipe_id: str) -> RecipeVersion | None:
        """The version of `recipe_id` the station runs when its PLC selects that product: the one last activated
        there, else the YAML's; None when the line has no such recipe."""
        version = self._station_versions[station].get(recipe_id)
        found = self.cached(recipe_id, version) if version is not None else None
        if found is not None:
            return found
        return next((v for (rid, _), v in self._seeded.items() if rid == recipe_id), None)

    def cached(self, recipe_id: str, version: str, sha256: str | None = None) -> RecipeVersion | None:
        for source in (self._fetched, self._seeded):
            found = source.get((recipe_id, version))
            if found is not None and (not sha256 or found.sha256 == sha256):
                return found
        return None

    async def resolve(self, recipe_id: str, version: str, sha256: str | None = None) -> RecipeVersion | None:
        """The version a part names (with its sha256, when it carries one); None when neither the store nor the YAML
        has it. Raises what the store raises when it cannot be reached (worth retrying)."""
        found = self.cached(recipe_id, version, sha256)
        if found is not None:
            return found
        if self.store is None:
            return None
        try:
            stored = await self.store.find(recipe_id, version)
        except RecipeError as exc:  # a record that is not a version: as good as none
            log.error("unreadable recipe version", recipe=f"{recipe_id}@{version}", error=str(exc))
            return None
        if stored is None or (sha256 and stored.sha256 != sha256):
            return None
        self._fetched[(recipe_id, version)] = stored
        return stored

    async def for_part(self, part: Part) -> RecipeVersion | None:
        """The version a part is judged by: the one it was triggered with; for a part that names none (a trigger from
        a tool, or from before versions), the version its station runs of its recipe (else the YAML's)."""
        if part.recipe_version:
            return await self.resolve(part.recipe_id, part.recipe_version, part.recipe_sha256 or None)
        if part.station in self._active:
            return self.version_for(part.station, part.recipe_id)
        return next((v for (rid, _), v in self._seeded.items() if rid == part.recipe_id), None)

    async def start(self) -> None:
        """Take in the activations the store holds now (before the service serves)."""
        if self.store is None:
            return
        for activation in (await self.store.stations(self.line)).values():
            await self.apply(activation)

    async def apply(self, activation: Activation) -> RecipeVersion | None:
        """Make an activation the station's live version; None (logged) when it cannot be, and the live one stays."""
        station = activation.station
        if station not in self._active or activation.line != self.line:
            return None
        version = await self.resolve(activation.recipe_id, activation.version, activation.sha256)
        if version is None:
            log.error(
                "activation refused: the store has no such version; the live recipe keeps running",
                station=station,
                recipe=activation.ref,
                sha256=activation.sha256,
                live=self._active[station].ref,
            )
            return None
        for rid, other in activation.versions.items():  # fetched now: a PLC's product change never waits on the bus
            with contextlib.suppress(RecipeError):
                await self.resolve(rid, other)
        before = self._active[station]
        self._active[station] = version
        self._station_versions[station] = dict(activation.versions)
        if before.sha256 != version.sha256:
            log.info("recipe activated", station=station, recipe=version.ref, sha256=version.sha256, was=before.ref)
        return version

    async def follow(self, stopping: asyncio.Event, on_change: OnChange | None = None) -> None:
        """Apply each activation as it is made until `stopping`; `on_change(station, version)` after each one taken.
        A watch the bus ends (a reconnect) is started again."""
        if self.store is None:
            return
        store = self.store

        async def watch() -> None:
            while True:
                try:
                    async for activation in store.watch(self.line):
                        version = await self.apply(activation)
                        if version is not None and on_change is not None:
                            done = on_change(activation.station, version)
                            if done is not None:
                                await done
                except Exception as exc:  # noqa: BLE001 - the bus went away: watch again once it is back
                    log.warning("recipe watch ended; watching again", error=repr(exc))
                await asyncio.sleep(_RETRY_S)

        task = asyncio.create_task(watch())
        try:
            await stopping.wait()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
