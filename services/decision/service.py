"""Decision service: joins trigger, inference and OCR per part and publishes the verdict.

Inputs are held unacked until the verdict is published, so a crash loses no
part: the bus redelivers them and the part is judged again. Only a part whose
trigger came is judged: results without one (a frame nobody triggered) are
dead-lettered at their deadline, and a result that disagrees with its trigger
about the part at once."""

from __future__ import annotations

from typing import Any

import structlog

from lineguard.bus import BadMessage, Delivery
from lineguard.contracts import now_ns
from lineguard.recipes import LiveRecipes, RecipeStore, RecipeVersion
from lineguard.runtime import tracing
from lineguard.runtime.service import ServiceContext
from lineguard.services.decision.join import Joiner, Pending, mismatch
from lineguard.services.decision.record import build_decision
from lineguard.services.decision.rules import judge, unknown_recipe
from lineguard.services.decision.shadow import ShadowJudge
from lineguard.v1.common_pb2 import Part
from lineguard.v1.decision_pb2 import Verdict
from lineguard.v1.inference_pb2 import InferenceResult
from lineguard.v1.ocr_pb2 import OcrResult
from lineguard.v1.trigger_pb2 import Trigger

log = structlog.get_logger("lineguard.decision")


class DecisionService:
    def __init__(self, ctx: ServiceContext):
        self.ctx = ctx
        self.joiner = Joiner()
        self.shadow = ShadowJudge(ctx)  # a shadow candidate's would-be verdicts, after the live ones

        # The recipe versions parts are judged by: the one each part was triggered with (setup gives it the store).
        self.live = LiveRecipes(ctx.config)

    async def recipe(self, part: Part) -> RecipeVersion | None:
        return await self.live.for_part(part)

    def _unknown_recipe(self, part: Part) -> str:
        known = ", ".join(f"{rid}@{v.version}" for rid, v in self.live.known().items())
        version = f"@{part.recipe_version}" if part.recipe_version else ""
        return f"unknown recipe {part.recipe_id!r}{version} for inspection {part.inspection_id} (known: {known})"

    async def on_trigger(self, delivery: Delivery[Trigger]) -> None:
        part = delivery.message.part
        if await self.recipe(part) is None:
            # The part still gets a verdict (ERROR is never a pass); the trigger is dead-lettered.
            if not self.joiner.already_decided(part.inspection_id):
                judgement = unknown_recipe(part.recipe_id, self.ctx.config.recipes)
                decision = build_decision(part, None, judgement, now_ns())
                await self.ctx.publish("decision", decision)
                self.joiner.close(part.inspection_id)
            raise BadMessage(self._unknown_recipe(part))
        await self._hold(delivery, None)

    async def on_inference(self, delivery: Delivery[InferenceResult]) -> None:
        await self._hold(delivery, "inference")

    async def on_ocr(self, delivery: Delivery[OcrResult]) -> None:
        await self._hold(delivery, "ocr")

    async def on_shadow(self, delivery: Delivery[InferenceResult]) -> None:
        inspection_id = delivery.message.part.inspection_id
        live_pending = inspection_id in self.joiner.pending or inspection_id in self.joiner.publishing
        await self.shadow.on_shadow(delivery, live_pending)

    async def _hold(self, delivery: Delivery[Any], slot: str | None) -> None:
        part = delivery.message.part
        publishing = self.joiner.publishing.get(part.inspection_id)
        if publishing is not None:
            # Redelivered while the verdict is being published: settled with it (acked, or retried if it fails), not
            # acked as judged now, which would lose the input if the publish fails and the part is judged again.
            publishing.held.append(delivery)
            delivery.defer()
            return
        if self.joiner.already_decided(part.inspection_id):
            log.info("result after the verdict; ignored", stage=slot or "trigger")
            return  # acked: the part is judged, and judged once
        opened = self.joiner.pending.get(part.inspection_id)
        wrong = mismatch(opened.part, part) if slot is not None and opened is not None and opened.triggered else None
        if wrong is not None:
            raise BadMessage(f"{slot} result disagrees with its trigger: {wrong}")
        recipe = await self.recipe(part)
        if recipe is None:
            raise BadMessage(self._unknown_recipe(part))
        entry = self.joiner.open(part, recipe.settings.deadline_ms, trigger=slot is None)
        if slot is None:
            await self._refuse_disagreeing(entry)
        if slot is not None:
            setattr(entry, slot, delivery.message)
        entry.held.append(delivery)
        delivery.defer()
        if entry.complete and entry.triggered:
            await self.decide(entry)

    async def _refuse_disagreeing(self, entry: Pending) -> None:
        """The trigger came after results: those that disagree with it about the part are dead-lettered."""
        for held in list(entry.held):
            if isinstance(held.message, Trigger):
                continue
            slot = "inference" if isinstance(held.message, InferenceResult) else "ocr"
            wrong = mismatch(entry.part, held.message.part)
            if wrong is not None:
                entry.held.remove(held)
                setattr(entry, slot, None)
                await held.fail(BadMessage(f"{slot} result disagrees with its trigger: {wrong}"))

    async def _untriggered(self, entry: Pending) -> None:
        """Results whose trigger never came are not judged: no verdict, no row; they are dead-lettered."""
        self.joiner.drop(entry.part.inspection_id)
        part = entry.part
        reason = (
            f"no trigger seen for inspection {part.inspection_id} (line {part.line!r} station {part.station!r}) by its "
            "deadline: the results of a part nobody triggered are not judged"
        )
        log.warning("results without a trigger; dead-lettered", station=part.station, results=len(entry.held))
        for held in entry.held:
            await held.fail(BadMessage(reason))
        await self.shadow.dropped(part.inspection_id)

    async def decide(self, entry: Pending) -> None:
        part = entry.part
        if self.joiner.pending.get(part.inspection_id) is not entry:
            return  # decided meanwhile (the deadline loop works from a snapshot)
        if not entry.triggered:
            await self._untriggered(entry)
            return
        # Out of pending before the publish awaits, so a result arriving meanwhile is not judged again; closed (judged
        # once) only when the bus has the verdict.
        self.joiner.publish(part.inspection_id)
        # The version the part was triggered with, whatever is active now (cached since the entry was opened).
        version = await self.recipe(part)
        assert version is not None  # checked when the entry was opened
        recipe = version.settings
        # Its inputs' handlers returned long ago (or it is the deadline): the decision is a step of the part's trace
        # under its trigger, linked to the results it joined; the verdict message carries it.
        trigger = next((d for d in entry.held if isinstance(d.message, Trigger)), None)
        with tracing.step(
            "decide",
            parent=trigger.trace if trigger is not None else None,
            links=[d.trace for d in entry.held if d is not trigger],
            attributes={"lineguard.inspection_id": part.inspection_id},
        ) as span:
            judgement = judge(recipe, entry.inference, entry.ocr)
            if span is not None:
                span.set_attribute("lineguard.verdict", Verdict.Name(judgement.verdict))
            decision = build_decision(part, recipe, judgement, now_ns(), entry.inference, entry.ocr)
            decision.part.recipe_version, decision.part.recipe_sha256 = version.version, version.sha256
            try:
                await self.ctx.publish("decision", decision)
            except Exception as exc:
                log.exception("could not publish the verdict; its inputs are retried, dead-lettered after max_deliver")
                tracing.failed(span, f"verdict not published: {exc!r}")
                self.joiner.forget(part.inspection_id)
                for delivery in entry.held:
                    await delivery.fail(exc)
                return
        self.joiner.close(part.inspection_id)
        log.info(
            "decided",
            verdict=Verdict.Name(judgement.verdict),
            reasons=judgement.reasons,
            inspection_id=part.inspection_id,
        )
        for delivery in entry.held:
            await delivery.ack()
        # After the live verdict is out and its inputs acked: a candidate never holds up the live part.
        await self.shadow.decided(decision.part, recipe, entry.ocr, judgement.verdict)

    async def deadlines(self) -> None:
        """A part whose results are not all in by its deadline is decided without them: FAIL, TIMEOUT."""
        await self.joiner.deadlines.run(self.ctx.stopping, self._expired)

    async def _expired(self, inspection_ids: list[str]) -> None:
        for entry in self.joiner.entries(inspection_ids):
            await self.decide(entry)


async def setup(ctx: ServiceContext) -> None:
    service = DecisionService(ctx)
    store = await RecipeStore.open(ctx.bus.js, provision=not ctx.config.nats.authenticated)
    service.live = LiveRecipes(ctx.config, store)
    await service.live.start()
    ctx.run_task(service.live.follow(ctx.stopping))
    ctx.consume("trigger", Trigger, service.on_trigger)
    ctx.consume("inference", InferenceResult, service.on_inference)
    ctx.consume("ocr", OcrResult, service.on_ocr)
    ctx.consume("shadow", InferenceResult, service.on_shadow)
    ctx.run_task(service.deadlines())
