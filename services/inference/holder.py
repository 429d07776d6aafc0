"""Which model the inference service runs, and the swap to a newly promoted one.

At start: the version promoted for the line in the model registry (downloaded to the cache
folder, sha256 verified), else the configured model (`model.path`, default the packaged one).
Then a watch on the line's promotion key: a new promotion is downloaded and loaded in a
thread while the old model keeps serving, and swapped in with one assignment on the event
loop. Each frame (each batch) takes `current()` once, so it is handled whole by one model and
its result names that model: no frame is dropped, held up or handled twice by a swap.

A promotion whose model does not load (a bad file, a sha256 that does not match, classes the
recipes name but the model lacks) is refused: the old model keeps serving, the error is logged,
`lineguard_model_promotion_refused` is 1 and the heartbeat says DEGRADED with the cause. At
start the same rule walks back the line's promotion history to the latest version that loads,
which is what a running service would have kept serving."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import structlog
from prometheus_client import Counter, Gauge

from lineguard.config import LineConfig, RecipeSettings
from lineguard.registry import ModelRegistry, Promotion, RegistryError
from lineguard.runtime.following import until_stopped
from lineguard.runtime.service import ServiceContext
from lineguard.services.inference.detect import load_configured_model
from lineguard.vision.cache import user_cache_dir
from lineguard.vision.model import Detector, ModelCard, ModelLoadError

log = structlog.get_logger("lineguard.inference")

MODEL_SERVING = Gauge(
    "lineguard_model_serving",
    "1 for the model version the service runs, 0 for earlier ones",
    ["service", "model_id", "version"],
)
PROMOTIONS = Counter(
    "lineguard_model_promotions_total",
    "Promotions the service acted on, by outcome (swapped, refused, unchanged)",
    ["service", "outcome"],
)
PROMOTION_REFUSED = Gauge(
    "lineguard_model_promotion_refused",
    "1 while the line's promoted model is refused and an earlier one keeps serving",
    ["service"],
)


def check_recipe_classes(card: ModelCard, recipes: dict[str, RecipeSettings], path: Path | str) -> None:
    """Every class a recipe has a rule for is one the model detects; else ModelLoadError naming them."""
    problems = []
    for recipe_id, recipe in sorted(recipes.items()):
        missing = [c for c in recipe.classes if c not in card.classes]
        if missing:
            problems.append(f"recipe {recipe_id!r} has rules for {missing}")
    if problems:
        raise ModelLoadError(
            path,
            f"classes disagree with the recipes: {'; '.join(problems)}, which model "
            f"{card.model_id} {card.version} does not detect (it detects {list(card.classes)})",
        )


def load_for_line(
    config: LineConfig, path: str | Path | None = None, *, model_id: str | None = None, version: str | None = None
) -> Detector:
    """Load a model with the line's backend settings and check it against the recipes (blocking)."""
    settings = config.model
    if path is not None:
        settings = settings.model_copy(update={"path": str(path), "id": model_id, "version": version})
    detector = load_configured_model(settings)
    try:
        check_recipe_classes(detector.card, config.recipes, detector.path)
    except ModelLoadError:
        detector.close()  # refused: its runtime's memory is not kept for nothing
        raise
    return detector


def cache_dir(config: LineConfig) -> Path:
    """Where registry models are downloaded to."""
    if config.model.cache_dir:
        return Path(config.model.cache_dir)
    return user_cache_dir("models")


class ModelHolder:
    """The model in use (`current()`) and where it came from (`promotion`: None = the configured model)."""

    def __init__(self, ctx: ServiceContext, detector: Detector, registry: ModelRegistry | None = None):
        self.ctx = ctx
        self.registry = registry
        self.promotion: Promotion | None = None
        self.refused: str = ""
        self.notes: dict[str, str] = {}  # what else the heartbeat says (shadow mode's state), by topic
        self._detector = detector
        # The model swapped out last: frames that took it may still be running, so it is closed (its
        # runtime's memory, on a GPU too) at the next swap, not at this one.
        self._retired: Detector | None = None

    def current(self) -> Detector:
        return self._detector

    @classmethod
    async def start(cls, ctx: ServiceContext) -> ModelHolder:
        """The model to start with; with the registry on, also the task that follows promotions.

        Raises ModelLoadError when no promoted version loads and the configured model does not either."""
        if not ctx.config.model.registry:
            holder = cls(ctx, await asyncio.to_thread(load_for_line, ctx.config))
            holder._serve(holder.current(), None)
            return holder
        registry = await ModelRegistry.open(ctx.bus.js, provision=not ctx.config.nats.authenticated)
        promotions = registry.watch(ctx.config.line)
        try:
            holder = await cls._first(ctx, registry, await anext(promotions))
        except BaseException:
            await promotions.aclose()  # type: ignore[attr-defined]
            raise
        ctx.run_task(holder.follow(promotions))
        return holder

    @classmethod
    async def _first(cls, ctx: ServiceContext, registry: ModelRegistry, latest: Promotion | None) -> ModelHolder:
        holder = None
        refused = ""
        if latest is not None:
            for promotion in await _newest_first(registry, latest):
                try:
                    holder = cls(ctx, await _load_promoted(registry, ctx, promotion), registry)
                    holder.promotion = promotion
                    break
                except Exception as exc:  # noqa: BLE001 - any failure refuses this version; try the one before
                    cause = _cause(exc)
                    log.error(
                        "promoted model refused",
                        line=ctx.config.line,
                        model_id=promotion.model_id,
                        model_version=promotion.version,
                        error=cause,
                    )
                    refused = refused or f"promotion of {promotion} refused: {cause}"
        if holder is None:
            if latest is not None:
                log.error("no promoted model of the line loads; running the configured model", line=ctx.config.line)
            holder = cls(ctx, await asyncio.to_thread(load_for_line, ctx.config), registry)
        holder._set_refused(refused)
        holder._serve(holder.current(), holder.promotion)
        return holder

    async def follow(self, promotions: AsyncIterator[Promotion | None]) -> None:
        """Apply each new promotion of the line until the service stops."""
        async for promotion in until_stopped(self.ctx.stopping, promotions):
            if promotion is not None:
                await self.apply(promotion)

    async def apply(self, promotion: Promotion) -> bool:
        """Swap to `promotion`'s model; False (logged, counted, in the heartbeat) when it is refused."""
        serving = self.current().card
        if (
            (promotion.model_id, promotion.version) == (serving.model_id, serving.version)
            and self.promotion is not None
            and self.promotion.sha256 == promotion.sha256
        ):
            PROMOTIONS.labels(self.ctx.name, "unchanged").inc()
            self.promotion = promotion
            self._set_refused("")
            log.info(
                "promotion names the model already running", model_id=serving.model_id, model_version=serving.version
            )
            return True
        assert self.registry is not None  # follow() runs only with the registry on
        started = time.monotonic()
        try:
            detector = await _load_promoted(self.registry, self.ctx, promotion)
        except Exception as exc:  # noqa: BLE001 - whatever the cause, the running model stays
            cause = _cause(exc)
            PROMOTIONS.labels(self.ctx.name, "refused").inc()
            log.error(
                "promoted model refused; the running model keeps serving",
                line=self.ctx.config.line,
                model_id=promotion.model_id,
                model_version=promotion.version,
                error=cause,
                serving=f"{serving.model_id} {serving.version}",
            )
            self._set_refused(f"promotion of {promotion} refused: {cause}")
            return False
        # The swap: frames already running finish with the old model; the next one gets the new.
        if self._retired is not None:
            self._retired.close()
        self._retired, self._detector = self._detector, detector
        self.promotion = promotion
        self._set_refused("")
        self._serve(detector, promotion, previous=serving)
        PROMOTIONS.labels(self.ctx.name, "swapped").inc()
        log.info(
            "model swapped",
            model_id=promotion.model_id,
            model_version=promotion.version,
            previous=f"{serving.model_id} {serving.version}",
            load_s=round(time.monotonic() - started, 2),
            promoted_by=promotion.by,
        )
        return True

    def _serve(self, detector: Detector, promotion: Promotion | None, previous: ModelCard | None = None) -> None:
        card = detector.card
        if previous is not None:
            MODEL_SERVING.labels(self.ctx.name, previous.model_id, previous.version).set(0)
        MODEL_SERVING.labels(self.ctx.name, card.model_id, card.version).set(1)
        source = f"promoted by {promotion.by} at {promotion.at}" if promotion else f"configured: {detector.path}"
        log.info("model in use", model_id=card.model_id, model_version=card.version, source=source)
        self._update_health()

    def _set_refused(self, why: str) -> None:
        self.refused = why
        PROMOTION_REFUSED.labels(self.ctx.name).set(1 if why else 0)
        self._update_health()

    def note(self, topic: str, text: str) -> None:
        """Say `text` in the heartbeat's detail (nothing when empty); it does not make the service DEGRADED."""
        self.notes[topic] = text
        self._update_health()

    def _update_health(self) -> None:
        card = self._detector.card
        said = [f"model {card.model_id} {card.version}", self.refused, *self.notes.values()]
        self.ctx.detail = "; ".join(s for s in said if s)
        self.ctx.degraded = bool(self.refused)


async def _newest_first(registry: ModelRegistry, latest: Promotion) -> list[Promotion]:
    """The latest promotion, then each earlier promoted version once, newest first."""
    seen, ordered = set(), []
    for promotion in [latest, *reversed(await registry.promotions(latest.line))]:
        key = (promotion.model_id, promotion.version)
        if key not in seen:
            seen.add(key)
            ordered.append(promotion)
    return ordered


async def _load_promoted(registry: ModelRegistry, ctx: ServiceContext, promotion: Promotion) -> Detector:
    stored = await registry.get(promotion.model_id, promotion.version)
    if stored.sha256 != promotion.sha256:
        raise RegistryError(
            f"{promotion} in the registry has sha256 {stored.sha256}, but the promotion names {promotion.sha256}"
        )
    path = await registry.fetch(promotion.model_id, promotion.version, cache_dir(ctx.config))
    # Loading takes seconds (a TensorRT engine build: minutes): in a thread, while the old model serves.
    return await asyncio.to_thread(
        load_for_line, ctx.config, path, model_id=promotion.model_id, version=promotion.version
    )


def _cause(exc: BaseException) -> str:
    if isinstance(exc, ModelLoadError | RegistryError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
