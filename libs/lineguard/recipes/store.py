"""The recipe store: every recipe version, and each station's active one, in the JetStream key-value bucket
`lg-recipes` (provisioned like the registry's buckets; only the operator identity writes it, the decision service
and the gateway read it: lineguard.bus.permissions).

Keys:
- `version.<recipe_id>.<version>`: one RecipeVersion (bundle.py) as JSON. Immutable: pushing the same settings
  again changes nothing, other settings under the same version are refused.
- `active.<line>.<station>`: an Activation, the version the station judges its parts by, with the version of every
  recipe the station has run (so a product change by the PLC picks that recipe's version). The bucket keeps each
  station's last 64 activations: `history`, and rolling back is activating an earlier version again.

Nothing here decides when a change takes effect: the services (live.py) apply it between parts."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import structlog
from nats.js import JetStreamContext, api
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from lineguard.config import LineConfig
from lineguard.config.rules import RECIPE_CLASSES_UNKNOWN, model_problems
from lineguard.contracts import RECIPES_BUCKET
from lineguard.recipes.bundle import RecipeError, RecipeVersion, check_names
from lineguard.registry import ModelRegistry, RegistryError, default_promoter

HISTORY = 64  # the most a JetStream key-value bucket keeps per key
RECIPES_STREAM = f"KV_{RECIPES_BUCKET}"
log = structlog.get_logger("lineguard.recipes")


def version_key(recipe_id: str, version: str) -> str:
    return f"version.{recipe_id}.{version}"


def active_key(line: str, station: str) -> str:
    return f"active.{line}.{station}"


@dataclass(frozen=True)
class Activation:
    """What a station runs: `recipe_id`@`version` (its `sha256`), and the version of each recipe it has run."""

    line: str
    station: str
    recipe_id: str
    version: str
    sha256: str
    versions: dict[str, str] = field(default_factory=dict)
    by: str = ""
    at: str = ""
    revision: int = 0

    @property
    def ref(self) -> str:
        return f"{self.recipe_id}@{self.version}"

    def to_json(self) -> bytes:
        data = asdict(self)
        del data["revision"]
        return json.dumps(data, sort_keys=True).encode()

    @classmethod
    def from_entry(cls, entry: KeyValue.Entry) -> Activation:
        try:
            data = json.loads(entry.value or b"")
            return cls(
                **{k: str(data[k]) for k in ("line", "station", "recipe_id", "version", "sha256", "by", "at")},
                versions={str(k): str(v) for k, v in dict(data["versions"]).items()},
                revision=int(entry.revision or 0),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise RecipeError(
                f"{entry.key} (revision {entry.revision}) is not an activation ({type(exc).__name__}: {exc})",
                "RECIPE_INVALID",
            ) from None


def activation_or_none(entry: KeyValue.Entry | None) -> Activation | None:
    """The activation an entry holds; None (logged) for a deletion or a record that is not one."""
    if entry is None or not entry.value or entry.operation is not None:
        return None
    try:
        return Activation.from_entry(entry)
    except RecipeError as exc:
        log.error("ignoring an activation record", error=str(exc))
        return None


async def provision_recipes(js: JetStreamContext) -> KeyValue:
    """The bucket, created when missing; safe from every process at every start (an open server's way)."""
    try:
        return await js.key_value(RECIPES_BUCKET)
    except BucketNotFoundError:
        pass
    config = api.KeyValueConfig(
        bucket=RECIPES_BUCKET,
        description="lineguard recipes: version.<id>.<version>, active.<line>.<station>",
        history=HISTORY,
        storage=api.StorageType.FILE,
    )
    try:
        return await js.create_key_value(config)
    except Exception as exc:
        if "already in use" not in str(exc):
            raise
    return await js.key_value(RECIPES_BUCKET)


async def open_recipes(js: JetStreamContext) -> KeyValue:
    try:
        return await js.key_value(RECIPES_BUCKET)
    except BucketNotFoundError:
        raise RecipeError(
            f"the recipe store's bucket {RECIPES_BUCKET} does not exist: on a secured server the admin identity "
            "makes it (`lineguard nats provision`)",
            "RECIPE_STORE_MISSING",
        ) from None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class RecipeStore:
    """push / get / list / activate / history / watch over the bucket."""

    def __init__(self, js: JetStreamContext, kv: KeyValue):
        self.js = js
        self.kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, *, provision: bool = True) -> RecipeStore:
        return cls(js, await (provision_recipes(js) if provision else open_recipes(js)))

    # -- versions -------------------------------------------------------------------------------

    async def push(
        self, candidate: RecipeVersion, *, registry: ModelRegistry | None, by: str | None = None
    ) -> tuple[RecipeVersion, bool]:
        """Store a version (checked first: its model reference against the registry); (stored, new).

        The same settings again return the stored version (new False); other settings under a stored version are
        refused: a version never changes."""
        check_names(candidate.recipe_id, candidate.version)
        await check_model(candidate, registry)
        existing = await self.find(candidate.recipe_id, candidate.version)
        if existing is not None:
            return _same_or_refused(existing, candidate), False
        stored = RecipeVersion.of(
            candidate.recipe_id, candidate.settings, pushed_by=by or default_promoter(), pushed_at=_now()
        )
        try:
            await self.kv.create(version_key(stored.recipe_id, stored.version), stored.to_json())
        except KeyWrongLastSequenceError:  # pushed meanwhile by someone else
            existing = await self.find(candidate.recipe_id, candidate.version)
            assert existing is not None
            return _same_or_refused(existing, candidate), False
        return stored, True

    async def find(self, recipe_id: str, version: str) -> RecipeVersion | None:
        key = version_key(recipe_id, version)
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return RecipeVersion.from_json(entry.value, key)

    async def get(self, recipe_id: str, version: str) -> RecipeVersion:
        """The stored version, or RecipeError naming the versions there are."""
        check_names(recipe_id, version)
        found = await self.find(recipe_id, version)
        if found is not None:
            return found
        versions = [v.version for v in await self.versions() if v.recipe_id == recipe_id]
        if versions:
            raise RecipeError(
                f"recipe {recipe_id} has no version {version!r} (stored: {', '.join(versions)})", "UNKNOWN_RECIPE"
            )
        raise RecipeError(f"no recipe {recipe_id!r} in the store", "UNKNOWN_RECIPE")

    async def _keys(self, prefix: str) -> list[str]:
        # The stream's own subject list, not kv.keys() (see ModelRegistry.lines: that one can time out when busy).
        subject = f"$KV.{RECIPES_BUCKET}."
        info = await self.js.stream_info(RECIPES_STREAM, subjects_filter=f"{subject}{prefix}>")
        return sorted(s[len(subject) :] for s in (info.state.subjects or {}))

    async def versions(self) -> list[RecipeVersion]:
        """Every stored version, by recipe id, oldest push first."""
        found = []
        for key in await self._keys("version."):
            _, recipe_id, version = key.split(".", 2)
            try:
                stored = await self.find(recipe_id, version)
            except RecipeError as exc:
                log.error("ignoring a recipe record", error=str(exc))
                continue
            if stored is not None:
                found.append(stored)
        return sorted(found, key=lambda v: (v.recipe_id, v.pushed_at, v.version))

    # -- activations ----------------------------------------------------------------------------

    async def activate(
        self, line: str, station: str, recipe_id: str, version: str, *, by: str | None = None
    ) -> Activation:
        """Make `station` on `line` judge the parts triggered from now on by a stored version."""
        stored = await self.get(recipe_id, version)
        key = active_key(line, station)
        for _ in range(5):  # another activation of the same station between our read and write: read again
            try:
                entry = await self.kv.get(key)
            except KeyNotFoundError:
                entry = None
            before = activation_or_none(entry)
            versions = {**(before.versions if before else {}), recipe_id: version}
            activation = Activation(
                line, station, recipe_id, version, stored.sha256, versions, by or default_promoter(), _now()
            )
            try:
                if entry is None:
                    revision = await self.kv.create(key, activation.to_json())
                else:
                    revision = await self.kv.update(key, activation.to_json(), last=entry.revision)
            except KeyWrongLastSequenceError:
                continue
            return Activation(**{**asdict(activation), "revision": revision})
        raise RecipeError(f"{key}: activated by someone else five times meanwhile; try again", "RECIPE_BUSY")

    async def active(self, line: str, station: str) -> Activation | None:
        try:
            return activation_or_none(await self.kv.get(active_key(line, station)))
        except KeyNotFoundError:
            return None

    async def stations(self, line: str) -> dict[str, Activation]:
        """Every station of `line` with an activation, and what it runs."""
        found = {}
        for key in await self._keys(f"active.{line}."):
            activation = await self.active(line, key.split(".", 2)[2])
            if activation is not None:
                found[activation.station] = activation
        return found

    async def history(self, line: str, station: str) -> list[Activation]:
        """The station's activations, oldest first (at most the last 64)."""
        try:
            entries = await self.kv.history(active_key(line, station))
        except NoKeysError:
            return []
        return [a for a in map(activation_or_none, entries) if a is not None]

    async def watch(self, line: str) -> AsyncIterator[Activation]:
        """Every station's current activation on `line`, then each new one as it is made."""
        watcher = await self.kv.watch(f"active.{line}.*")
        try:
            async for entry in watcher:
                activation = activation_or_none(entry)  # None also marks the end of what was there
                if activation is not None:
                    yield activation
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()

    # -- the line's YAML ------------------------------------------------------------------------

    async def seed(
        self, config: LineConfig, *, registry: ModelRegistry | None, by: str | None = None
    ) -> list[tuple[str, str]]:
        """Push every recipe of the line's YAML, and activate each station's recipe where the station has no
        activation yet; (ref, what happened) for each. A refused recipe is reported, the others still go in."""
        report = []
        for recipe_id, settings in sorted(config.recipes.items()):
            ref = f"{recipe_id}@{settings.version}"
            try:
                _, new = await self.push(RecipeVersion.of(recipe_id, settings), registry=registry, by=by)
            except RecipeError as exc:
                report.append((ref, f"refused: {exc}"))
                continue
            report.append((ref, "pushed" if new else "already stored"))
        for station in config.stations:
            recipe = config.recipe(station.recipe)
            if await self.active(config.line, station.id) is not None:
                continue
            try:
                await self.activate(config.line, station.id, station.recipe, recipe.version, by=by)
            except RecipeError as exc:
                report.append((f"{config.line}/{station.id}", f"not activated: {exc}"))
                continue
            report.append((f"{config.line}/{station.id}", f"activated {station.recipe}@{recipe.version}"))
        return report


def _same_or_refused(existing: RecipeVersion, candidate: RecipeVersion) -> RecipeVersion:
    if existing.sha256 == candidate.sha256:
        return existing
    raise RecipeError(
        f"{candidate.ref} is already stored with other settings (sha256 {existing.sha256}, this one "
        f"{candidate.sha256}); a version never changes: push it as a new version",
        "RECIPE_VERSION_EXISTS",
    )


async def check_model(candidate: RecipeVersion, registry: ModelRegistry | None) -> None:
    """A version's model reference names a version in the registry, with that file's sha256, whose classes include
    every class the recipe has a rule for."""
    model = candidate.settings.model
    if model is None:
        return
    where = f"{candidate.ref}: model {model.id} {model.version}"
    if registry is None:
        raise RecipeError(f"{where}: no model registry to check the reference against", "MODEL_UNKNOWN")
    try:
        stored = await registry.get(model.id, model.version)
    except RegistryError as exc:
        raise RecipeError(f"{where} is not in the model registry ({exc})", "MODEL_UNKNOWN") from None
    if stored.sha256 != model.sha256:
        raise RecipeError(
            f"{where}: the registry's file has sha256 {stored.sha256}, the recipe names {model.sha256}", "MODEL_UNKNOWN"
        )
    # The recipe's classes and its zones' (lineguard.config.rules: the one check of a recipe against a model).
    unknown = model_problems(candidate.settings, stored.classes, f"model {model.id} {model.version}")
    if unknown:
        said = "; ".join(f"{p.field}: {p.message}" for p in unknown)
        raise RecipeError(f"{candidate.ref}: {said}", RECIPE_CLASSES_UNKNOWN)
