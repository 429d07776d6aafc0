"""The model registry: versioned models in a JetStream object store, and which version each line runs.

Layout (both buckets are provisioned idempotently, like the streams; on a secured line by the admin identity, and
only the operator identity may write them: lineguard.bus.permissions):
- object store `lg-models`: each version is two objects, `<model_id>/<version>/model.onnx` and
  `<model_id>/<version>/card.json` (the model card, lineguard.vision.card.ModelCard). The card
  is written last: a version exists once its card does, so an interrupted push leaves no half version,
  and `list` reads cards without downloading models.
- key-value bucket `lg-model-promoted`: key = line id, value = JSON `Promotion` (model id, version,
  sha256, who, when; on a secured line "who" is the identity the server signed in, `operator U...` with the
  operator's public nkey, never a name the client claims, and that key may write only its own line's key).
  The bucket keeps each line's last 64 promotions: rolling back is promoting an earlier version again, and
  the inference service can fall back along this history.
- key-value bucket `lg-model-shadow`: key = line id, value = JSON `ShadowRun` (the candidate's id, version and
  sha256, the share of parts it sees, who, when); deleted when shadow mode stops. A candidate must detect the
  same classes as the model the line runs (reason SHADOW_CLASSES_DIFFER), or its verdicts would not compare.

A version is immutable: pushing it again with the same model file and card does nothing; with a
different file or card it is refused. The card's `onnx_sha256` must match the file, at push and at
every fetch."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import re
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Self

import nats
import structlog
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext, api
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NoKeysError, NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from lineguard.bus.client import connect_options
from lineguard.bus.credentials import CredentialError, read_public_key
from lineguard.bus.permissions import OPERATOR
from lineguard.config import NatsSettings
from lineguard.contracts import MODELS_BUCKET, PROMOTED_BUCKET, SHADOW_BUCKET
from lineguard.hashing import file_sha256
from lineguard.vision.card import ModelCard, card_path
from lineguard.vision.errors import ModelLoadError

PROMOTION_HISTORY = 64  # the most a JetStream key-value bucket keeps per key
MODEL_OBJECT = "model.onnx"
CARD_OBJECT = "card.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # no "/" and no leading dot: object names stay unambiguous
_LINE = re.compile(r"^[A-Za-z0-9_-]+$")
log = structlog.get_logger("lineguard.registry")


class RegistryError(RuntimeError):
    """The registry refused or could not do what was asked; the message says why, `reason` (a code) what kind."""

    def __init__(self, message: str, reason: str = "REGISTRY_REFUSED"):
        super().__init__(message)
        self.reason = reason


# A shadow candidate whose classes are not the live model's: its verdicts would not be comparable.
SHADOW_CLASSES_DIFFER = "SHADOW_CLASSES_DIFFER"


def check_shadow_classes(live: Sequence[str], candidate: Sequence[str], *, live_name: str, candidate_name: str) -> None:
    """RegistryError (SHADOW_CLASSES_DIFFER) unless the candidate detects the live model's classes, in its order."""
    if list(live) != list(candidate):
        raise RegistryError(
            f"{SHADOW_CLASSES_DIFFER}: shadow candidate {candidate_name} detects {list(candidate)}, but the live model "
            f"{live_name} detects {list(live)}: a candidate must detect the same classes to be compared",
            SHADOW_CLASSES_DIFFER,
        )


@dataclass(frozen=True)
class ModelVersion:
    """One pushed version: its card and what the store holds."""

    model_id: str
    version: str
    sha256: str
    size: int
    card: ModelCard
    pushed: str  # ISO time the card was stored

    @property
    def classes(self) -> list[str]:
        return list(self.card.classes)

    def file_name(self) -> str:
        # A folder per id and version: "a-b" 1 and "a" "b-1" must not share a cached file.
        return f"{self.model_id}/{self.version}/{self.model_id}.onnx"


@dataclass(frozen=True)
class LineModel:
    """A model version kept for a line in a key-value bucket (key = the line id): the JSON value has every field
    but `revision`, the entry's stream sequence, which orders the line's records. Promotion and ShadowRun."""

    line: str
    model_id: str
    version: str
    sha256: str
    by: str
    at: str
    revision: int = field(default=0, kw_only=True)

    _WHAT: ClassVar[str] = "record"  # what the refusal of an unreadable entry calls it

    def to_json(self) -> bytes:
        data = asdict(self)
        del data["revision"]
        return json.dumps(data).encode()

    def stored(self, revision: int) -> Self:
        """This record as the bucket stored it, under `revision`."""
        return replace(self, revision=revision)

    @classmethod
    def from_entry(cls, entry: KeyValue.Entry) -> Self:
        try:
            data = json.loads(entry.value or b"")
            return cls(
                **{k: str(data[k]) for k in ("line", "model_id", "version", "sha256", "by", "at")},
                **cls._fields_of(data),
                revision=int(entry.revision or 0),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryError(
                f"{cls._WHAT} of line {entry.key!r} (revision {entry.revision}) is not a {cls._WHAT} record "
                f"({type(exc).__name__}: {exc})"
            ) from None

    @classmethod
    def or_none(cls, entry: KeyValue.Entry) -> Self | None:
        """The record an entry holds; None for a deletion, and (logged) for a value that is not one."""
        if not entry.value or entry.operation is not None:  # deleted or purged
            return None
        try:
            return cls.from_entry(entry)
        except RegistryError as exc:
            log.error(f"ignoring a {cls._WHAT} record", error=str(exc))
            return None

    @classmethod
    def _fields_of(cls, data: dict[str, Any]) -> dict[str, Any]:
        """The subclass's own fields read from the JSON value (ValueError, KeyError, TypeError: not a record)."""
        return {}

    def __str__(self) -> str:
        return f"{self.model_id} {self.version}"


@dataclass(frozen=True)
class Promotion(LineModel):
    """Which version a line runs; `revision` orders promotions (the key-value entry's stream sequence)."""

    _WHAT: ClassVar[str] = "promotion"

    def names(self, version: ModelVersion) -> bool:
        return (self.model_id, self.version, self.sha256) == (version.model_id, version.version, version.sha256)


@dataclass(frozen=True)
class ShadowRun(LineModel):
    """Which candidate runs in shadow on a line and on what share of its parts (0 < share <= 1)."""

    share: float

    _WHAT: ClassVar[str] = "shadow run"

    @classmethod
    def _fields_of(cls, data: dict[str, Any]) -> dict[str, Any]:
        share = float(data["share"])
        if not 0 < share <= 1:
            raise ValueError(f"share {share} is not in (0, 1]")
        return {"share": share}


def object_prefix(model_id: str, version: str) -> str:
    return f"{model_id}/{version}/"


def check_card(card: ModelCard, where: str) -> None:
    """A card the registry can store (beyond a valid card): id and version usable as names, the file's sha256."""
    for name in ("model_id", "version"):
        value = getattr(card, name)
        if not _NAME.match(value):
            raise RegistryError(
                f"{where}: {name} {value!r} must be letters, digits, '.', '_' or '-' (not starting with '.' or '-')"
            )
    if card.onnx_sha256 is None:
        raise RegistryError(
            f"{where}: 'onnx_sha256' must be the model file's sha256 (64 hex digits), got None; "
            "`lineguard model export` writes it, or add it with `sha256sum MODEL.onnx`"
        )


def push_card(card: ModelCard | dict[str, Any] | str | Path, path: Path) -> tuple[ModelCard, str]:
    """The card to push with the model file `path` (as given, from a mapping or from its file) and how the
    errors name it; RegistryError naming the file and field when it is not a valid card."""
    try:
        if isinstance(card, ModelCard):
            return card, f"model {path}"
        if isinstance(card, dict):
            return ModelCard.validated(card, path=path, what="model card"), f"model {path}"
        return ModelCard.read(Path(card), model=path), f"model card {card}"
    except ModelLoadError as exc:
        raise RegistryError(str(exc)) from None


def default_promoter() -> str:
    """Who promotes on an open bus (no sign-in): the local user, as claimed by this machine."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def signed_in_name(identity: str, seed: Path) -> str:
    """How a record names the identity a secured server signed in: its role and its public nkey (the server
    admitted the connection only for the holder of that key's seed, and only it may write the record)."""
    return f"{identity} {read_public_key(seed)}"


async def _ensure(open_existing, create) -> Any:
    """Open a bucket, creating it when it is missing; another process creating it meanwhile is fine."""
    try:
        return await open_existing()
    except BucketNotFoundError:
        pass
    try:
        return await create()
    except Exception as exc:
        if "already in use" not in str(exc):
            raise
    return await open_existing()


async def open_registry_buckets(js: JetStreamContext) -> tuple[ObjectStore, KeyValue, KeyValue]:
    """The registry's buckets as they are, for an identity that may not make them (a secured line's)."""
    try:
        return (
            await js.object_store(MODELS_BUCKET),
            await js.key_value(PROMOTED_BUCKET),
            await js.key_value(SHADOW_BUCKET),
        )
    except BucketNotFoundError:
        raise RegistryError(
            f"the model registry's buckets ({MODELS_BUCKET}, {PROMOTED_BUCKET}, {SHADOW_BUCKET}) do not exist: on a "
            "secured server "
            "the admin identity makes them (`lineguard nats provision`)"
        ) from None


async def provision_registry(js: JetStreamContext) -> tuple[ObjectStore, KeyValue, KeyValue]:
    """The registry's buckets, created when missing. Safe to run from every process at every start."""
    models = await _ensure(
        lambda: js.object_store(MODELS_BUCKET),
        lambda: js.create_object_store(
            MODELS_BUCKET,
            config=api.ObjectStoreConfig(
                description="lineguard models: <model_id>/<version>/{model.onnx,card.json}",
                storage=api.StorageType.FILE,
            ),
        ),
    )

    async def line_bucket(bucket: str, description: str) -> KeyValue:
        # A LineModel per line, its history kept: rolling back and falling back read it.
        config = api.KeyValueConfig(
            bucket=bucket, description=description, history=PROMOTION_HISTORY, storage=api.StorageType.FILE
        )
        return await _ensure(lambda: js.key_value(bucket), lambda: js.create_key_value(config))

    promoted = await line_bucket(PROMOTED_BUCKET, "lineguard: the model version each line runs")
    shadow = await line_bucket(SHADOW_BUCKET, "lineguard: the candidate model each line runs in shadow")
    return models, promoted, shadow


class ModelRegistry:
    """push / list / promote / fetch over one JetStream connection."""

    def __init__(
        self,
        js: JetStreamContext,
        models: ObjectStore,
        promoted: KeyValue,
        shadow: KeyValue,
        *,
        signed_in_as: str | None = None,
    ):
        self.js = js
        self.models = models
        self.promoted_kv = promoted
        self.shadow_kv = shadow
        # The identity the server signed this connection in as (signed_in_name); None on an open bus.
        self.signed_in_as = signed_in_as

    @classmethod
    async def open(
        cls, js: JetStreamContext, *, provision: bool = True, signed_in_as: str | None = None
    ) -> ModelRegistry:
        """The registry on `js`; `provision`: make its buckets when missing (an open server's way; on a secured
        one only the admin identity may). `signed_in_as`: what promotions made through it record as their author."""
        buckets = await (provision_registry(js) if provision else open_registry_buckets(js))
        return cls(js, *buckets, signed_in_as=signed_in_as)

    def _author(self, by: str | None) -> str:
        """Who a promotion or shadow run records: the signed-in identity on a secured bus (a claimed name there is
        refused, so no record says anything the server did not check), else `by` or the local user."""
        if self.signed_in_as is None:
            return by or default_promoter()
        if by is not None and by != self.signed_in_as:
            raise RegistryError(
                f"signed in as {self.signed_in_as}: a promotion records that identity, not the claimed {by!r}",
                "PROMOTER_CLAIMED",
            )
        return self.signed_in_as

    # -- versions -------------------------------------------------------------------------------

    async def push(self, path: str | Path, card: ModelCard | dict[str, Any] | str | Path | None = None) -> ModelVersion:
        """Store the model file `path` with its card (default: `<stem>.json` beside it).

        Refuses a file whose sha256 is not the card's `onnx_sha256`, and a version that already exists
        with a different file or card; pushing the same file and card again returns the stored version."""
        path = Path(path)
        if not path.is_file():
            raise RegistryError(f"model {path}: file not found")
        if card is None:
            card = card_path(path)
            if not card.is_file():
                raise RegistryError(f"model {path}: no model card {card.name} beside it (give one with --card)")
        card_data, where = push_card(card, path)
        check_card(card_data, where)
        sha = await asyncio.to_thread(file_sha256, path)
        if sha != card_data.onnx_sha256:
            raise RegistryError(
                f"model {path}: its sha256 is {sha}, but its card says {card_data.onnx_sha256}: "
                "the card describes another file"
            )
        model_id, version = card_data.model_id, card_data.version
        existing = await self._find(model_id, version)
        if existing is not None:
            if existing.sha256 == sha and existing.card.to_json() == card_data.to_json():
                return existing
            what = "model file" if existing.sha256 != sha else "card"
            raise RegistryError(
                f"{model_id} {version} is already in the registry with a different {what} "
                f"(stored sha256 {existing.sha256}); a version never changes: push a new version"
            )
        prefix = object_prefix(model_id, version)
        with open(path, "rb") as f:
            await self.models.put(prefix + MODEL_OBJECT, f)
        # The card last: its presence is what makes the version exist.
        await self.models.put(prefix + CARD_OBJECT, card_data.to_json().encode())
        stored = await self._find(model_id, version)
        assert stored is not None
        return stored

    async def list_models(self) -> list[ModelVersion]:
        """Every pushed version, by model id, oldest push first."""
        try:
            infos = await self.models.list(ignore_deletes=True)
        except NotFoundError:
            return []
        sizes = {i.name: i.size for i in infos if i.name.endswith("/" + MODEL_OBJECT)}
        found = []
        for info in infos:
            if not info.name.endswith("/" + CARD_OBJECT):
                continue
            model_id, version, _ = info.name.split("/")
            model_name = object_prefix(model_id, version) + MODEL_OBJECT
            if model_name in sizes:
                found.append(await self._version(model_id, version, sizes[model_name], info.mtime or ""))
        return sorted(found, key=lambda v: (v.model_id, v.pushed))

    async def get(self, model_id: str, version: str) -> ModelVersion:
        """The stored version, or RegistryError naming the versions there are."""
        found = await self._find(model_id, version)
        if found is not None:
            return found
        versions = [v.version for v in await self.list_models() if v.model_id == model_id]
        if versions:
            raise RegistryError(f"model {model_id} has no version {version!r} (pushed: {', '.join(versions)})")
        raise RegistryError(f"no model {model_id!r} in the registry")

    async def _find(self, model_id: str, version: str) -> ModelVersion | None:
        if not (_NAME.match(model_id) and _NAME.match(version)):
            return None
        prefix = object_prefix(model_id, version)
        try:
            card_info = await self.models.get_info(prefix + CARD_OBJECT)
            model_info = await self.models.get_info(prefix + MODEL_OBJECT)
        except NotFoundError:
            return None
        return await self._version(model_id, version, model_info.size, card_info.mtime or "")

    async def _version(self, model_id: str, version: str, size: int | None, pushed: str) -> ModelVersion:
        raw = (await self.models.get(object_prefix(model_id, version) + CARD_OBJECT)).data
        try:
            data = json.loads(raw or b"")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RegistryError(f"{model_id} {version}: stored card is not JSON ({exc})") from None
        try:
            card = ModelCard.validated(
                data, path=Path(object_prefix(model_id, version) + CARD_OBJECT), what="stored card"
            )
        except ModelLoadError as exc:
            raise RegistryError(f"{model_id} {version}: {exc.cause}") from None
        return ModelVersion(model_id, version, card.onnx_sha256 or "", size or 0, card, pushed)

    async def fetch(self, model_id: str, version: str, dest_dir: str | Path) -> Path:
        """Download a version to `dest_dir/<model_id>/<version>/<model_id>.onnx` with its card beside it.

        A file already there with the right sha256 is not downloaded again; a download whose sha256
        is not the card's is deleted and refused."""
        stored = await self.get(model_id, version)
        target = Path(dest_dir) / stored.file_name()
        target.parent.mkdir(parents=True, exist_ok=True)
        card_target = card_path(target)
        card_text = stored.card.to_json()
        if target.is_file() and await asyncio.to_thread(file_sha256, target) == stored.sha256:
            if not card_target.is_file() or card_target.read_text() != card_text:
                card_target.write_text(card_text)
            return target
        partial = target.with_name(f".{target.name}.{os.getpid()}.part")
        try:
            with open(partial, "wb") as f:
                await self.models.get(object_prefix(model_id, version) + MODEL_OBJECT, writeinto=f)
            got = await asyncio.to_thread(file_sha256, partial)
            if got != stored.sha256:
                raise RegistryError(
                    f"{model_id} {version}: downloaded file has sha256 {got}, but its card says {stored.sha256}"
                )
            card_target.write_text(card_text)
            os.replace(partial, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
        return target

    # -- promotions -----------------------------------------------------------------------------

    async def promote(self, model_id: str, version: str, line: str, *, by: str | None = None) -> Promotion:
        """Make `line` run this version (the line's inference services swap to it); refuses an unknown version.
        The record names the signed-in identity (secured bus) or `by` / the local user (open bus): _author."""
        if not _LINE.match(line):
            raise RegistryError(f"line {line!r}: a line id is letters, digits, '_' or '-'")
        stored = await self.get(model_id, version)
        promotion = Promotion(
            line=line,
            model_id=model_id,
            version=version,
            sha256=stored.sha256,
            by=self._author(by),
            at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        return promotion.stored(await self.promoted_kv.put(line, promotion.to_json()))

    async def promoted(self, line: str) -> Promotion | None:
        """The version `line` runs, or None when none was ever promoted there."""
        try:
            entry = await self.promoted_kv.get(line)
        except KeyNotFoundError:
            return None
        return Promotion.from_entry(entry)

    async def promotions(self, line: str) -> list[Promotion]:
        """The line's promotions, oldest first (at most the last 64)."""
        try:
            entries = await self.promoted_kv.history(line)
        except NoKeysError:
            return []
        return [p for p in map(Promotion.or_none, entries) if p is not None]

    async def lines(self) -> dict[str, Promotion]:
        """Every line with a promotion, and what it runs."""
        # The stream's own subject list, not kv.keys(): that one watches the bucket and, on a busy
        # machine, can time out before the first key arrives and report an empty bucket.
        prefix = f"$KV.{PROMOTED_BUCKET}."
        info = await self.js.stream_info(f"KV_{PROMOTED_BUCKET}", subjects_filter=f"{prefix}>")
        keys = sorted(subject[len(prefix) :] for subject in (info.state.subjects or {}))
        found = {}
        for line in keys:
            try:
                promotion = await self.promoted(line)
            except RegistryError as exc:
                log.error("ignoring a promotion record", error=str(exc))
                continue
            if promotion is not None:
                found[line] = promotion
        return found

    async def rollback(self, line: str, *, by: str | None = None) -> tuple[Promotion, Promotion]:
        """Promote again the version the line ran before its current one: (what it ran, what it runs now)."""
        current = await self.promoted(line)
        if current is None:
            raise RegistryError(f"line {line!r}: no model was ever promoted there, so there is nothing to roll back")
        earlier = [
            p
            for p in reversed(await self.promotions(line))
            if (p.model_id, p.version) != (current.model_id, current.version)
        ]
        if not earlier:
            raise RegistryError(f"line {line!r}: {current} is the only version it ever ran; nothing to roll back to")
        return current, await self.promote(earlier[0].model_id, earlier[0].version, line, by=by)

    # -- shadow mode ----------------------------------------------------------------------------

    async def start_shadow(
        self, model_id: str, version: str, line: str, *, share: float = 1.0, by: str | None = None
    ) -> ShadowRun:
        """Run `model_id` `version` in shadow on `line`, on `share` of its parts; refuses an unknown version, a share
        outside (0, 1], and a candidate whose classes are not those of the model the line has promoted."""
        if not _LINE.match(line):
            raise RegistryError(f"line {line!r}: a line id is letters, digits, '_' or '-'")
        if not 0 < share <= 1:
            raise RegistryError(f"share {share:g}: the share of parts the candidate sees is in (0, 1]", "SHADOW_SHARE")
        stored = await self.get(model_id, version)
        live = await self.promoted(line)
        if live is not None:
            running = await self.get(live.model_id, live.version)
            check_shadow_classes(
                running.classes, stored.classes, live_name=str(live), candidate_name=f"{model_id} {version}"
            )
        run = ShadowRun(
            line=line,
            model_id=model_id,
            version=version,
            sha256=stored.sha256,
            share=share,
            by=self._author(by),
            at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        return run.stored(await self.shadow_kv.put(line, run.to_json()))

    async def stop_shadow(self, line: str) -> ShadowRun | None:
        """Stop shadow mode on `line`; what ran (None: nothing did)."""
        running = await self.shadow(line)
        if running is not None:
            await self.shadow_kv.delete(line)
        return running

    async def shadow(self, line: str) -> ShadowRun | None:
        """The candidate running in shadow on `line`, or None."""
        try:
            entry = await self.shadow_kv.get(line)
        except KeyNotFoundError:  # never started, or stopped (a deleted key reads as not found)
            return None
        if not entry.value or entry.operation is not None:
            return None
        return ShadowRun.from_entry(entry)

    async def watch_shadow(self, line: str) -> AsyncIterator[ShadowRun | None]:
        """The line's shadow run now (None: none), then each change: a new run, or None when it stops."""
        watcher = await self.shadow_kv.watch(line)
        try:
            current: ShadowRun | None = None
            async for entry in watcher:
                if entry is None:  # the end of what was there before the watch began
                    break
                current = ShadowRun.or_none(entry)
            yield current
            async for entry in watcher:
                if entry is not None:
                    yield ShadowRun.or_none(entry)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()

    async def watch(self, line: str) -> AsyncIterator[Promotion | None]:
        """The line's current promotion (None if there is none), then each new one as it is made.

        A record that is not a promotion (written by hand?) is logged and skipped."""
        # From the start of the line's history, so an unreadable latest record falls back to the one before.
        watcher = await self.promoted_kv.watch(line, include_history=True)
        try:
            initial: Promotion | None = None
            async for entry in watcher:
                if entry is None:  # the end of what was there before the watch began
                    break
                if not entry.value or entry.operation is not None:  # deleted: nothing promoted now
                    initial = None
                else:
                    initial = Promotion.or_none(entry) or initial
            yield initial
            async for entry in watcher:
                promotion = Promotion.or_none(entry) if entry is not None else None
                if promotion is not None:
                    yield promotion
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()


@contextlib.asynccontextmanager
async def connect_registry(
    nats_settings: NatsSettings | str,
    *,
    identity: str = OPERATOR,
    seed: Path | None = None,
    timeout_s: float = 5.0,
) -> AsyncIterator[ModelRegistry]:
    """A registry on its own NATS connection (the CLI's), signed in as `identity` (with `seed`, else its seed in
    the settings' credentials folder, if any); fails fast when the server is not there, and names what the
    server refused."""
    settings = NatsSettings(url=nats_settings) if isinstance(nats_settings, str) else nats_settings
    refusals: list[str] = []

    async def note(exc: Exception) -> None:  # nats-py prints connection errors itself by default
        refusals.append(str(exc))

    try:
        options = connect_options(settings, identity, seed=seed)
        signed_in_as = signed_in_name(identity, Path(options["nkeys_seed"])) if "nkeys_seed" in options else None
        nc = await nats.connect(
            **{**options, "connect_timeout": timeout_s, "error_cb": note},
            name=f"lineguard-model-registry-{identity}",
            allow_reconnect=False,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.2,
        )
    except CredentialError as exc:
        raise RegistryError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - nats raises several unrelated types for "not reachable"
        raise RegistryError(f"cannot reach NATS at {settings.url} ({type(exc).__name__}: {exc})") from None
    try:
        # timeout_s bounds each JetStream call too: a refused one is never answered, only timed out.
        yield await ModelRegistry.open(
            nc.jetstream(timeout=timeout_s),
            provision=not (settings.authenticated or seed),
            signed_in_as=signed_in_as,
        )
    except (TimeoutError, NatsTimeoutError) as exc:
        # A publish the server refused is never answered: the refusal, not the timeout, is the cause.
        if refusals:
            raise RegistryError(f"the NATS server refused identity {identity!r}: {'; '.join(refusals)}") from None
        raise RegistryError(f"NATS at {settings.url} did not answer in time ({type(exc).__name__})") from None
    finally:
        await nc.close()
