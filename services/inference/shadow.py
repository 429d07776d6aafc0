"""Shadow mode: a candidate model from the registry runs beside the live one, its results never reach the PLC.

`lineguard model shadow start ID VERSION --share S` writes the line's key in the registry's `lg-model-shadow`
bucket; this module follows it. The candidate is downloaded and loaded in a thread (the live model serves
meanwhile) and must detect the live model's classes, in the same order: a candidate that does not is refused
(reason SHADOW_CLASSES_DIFFER, logged, counted, in the heartbeat's detail) and the live model runs on alone.

Which parts: a share of them, picked by the inspection id's hash, so a redelivered frame is picked again and
the choice does not depend on the order frames come in. When: after each live batch, once its results are handed
over (published while the candidate runs), and only while no live frame is waiting: the picked frames wait in a
short backlog (BACKLOG frames) and run a batch at a time between live batches, so a live frame waits for at most
one candidate batch. Shadow mode costs the candidate model's time and nothing more; a line too busy to give it
that time drops the oldest frames of the backlog (counted as `busy`) rather than delay live ones.

The candidate's results go out on `lg.shadow.<line>.<station>`, a kind the gateway never reads; the
decision service judges them into `lg.shadow_verdict`, which only the results service reads."""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import AsyncIterator, Callable

import structlog
from prometheus_client import Counter, Gauge

from lineguard.imaging import FrameError
from lineguard.registry import ModelRegistry, RegistryError, ShadowRun, check_shadow_classes
from lineguard.runtime.following import until_stopped
from lineguard.runtime.service import ServiceContext
from lineguard.services.inference.detect import PreparedFrame, infer_prepared, prepare_frame
from lineguard.services.inference.holder import ModelHolder, cache_dir, load_for_line
from lineguard.v1.inference_pb2 import InferenceResult
from lineguard.vision.model import Detector, ModelLoadError

log = structlog.get_logger("lineguard.inference")

SHADOW_FRAMES = Counter(
    "lineguard_shadow_frames_total",
    "Frames the shadow candidate ran on, or skipped (not_sampled, busy: live frames waiting, refused, failed)",
    ["service", "outcome"],
)
SHADOW_REFUSED = Gauge(
    "lineguard_shadow_refused",
    "1 while the line's shadow candidate is refused (the live model runs on alone; the log and heartbeat say why)",
    ["service"],
)
# The stage of a shadow result's Nats-Msg-Id: one per part and candidate.
SHADOW_STAGE = "shadow"
# Frames picked for the candidate and not yet run: a burst's worth (each holds its letterboxed image).
BACKLOG = 8


def sampled(inspection_id: str, share: float) -> bool:
    """Whether the part is one of the `share` the candidate sees: by its id's hash, the same on every delivery."""
    if share >= 1:
        return True
    bucket = int.from_bytes(hashlib.sha256(inspection_id.encode()).digest()[:8], "big") / 2**64
    return bucket < share


class ShadowModel:
    """The candidate in shadow (or none), checked against the live model, and its run over a batch's frames."""

    def __init__(self, ctx: ServiceContext, holder: ModelHolder):
        self.ctx = ctx
        self.holder = holder
        self.live: Callable[[], Detector] = holder.current
        self.registry: ModelRegistry | None = holder.registry
        self.run: ShadowRun | None = None
        self.detector: Detector | None = None
        self.refused = ""  # why the line's candidate does not run; "" when it runs or none is set
        self.backlog: deque[PreparedFrame] = deque()
        self._retired: Detector | None = None

    @property
    def detail(self) -> str:
        if self.refused:
            return f"shadow refused: {self.refused}"
        return f"shadow {self.run} on {self.run.share:.0%} of parts" if self.run and self.detector else ""

    async def follow(self, runs: AsyncIterator[ShadowRun | None]) -> None:
        """Apply each change of the line's shadow run until the service stops."""
        async for run in until_stopped(self.ctx.stopping, runs):
            await self.apply(run)

    async def apply(self, run: ShadowRun | None) -> bool:
        """Run `run`'s candidate (None: stop shadow mode); False when it is refused."""
        if run is None:
            if self.run is not None or self.refused:
                log.info("shadow mode stopped", candidate=str(self.run) if self.run else None)
            self._set(None, None, "")
            return True
        assert self.registry is not None
        try:
            stored = await self.registry.get(run.model_id, run.version)
            if stored.sha256 != run.sha256:
                raise RegistryError(
                    f"{run} in the registry has sha256 {stored.sha256}, the shadow run names {run.sha256}"
                )
            live = self.live().card
            # Checked before the download: a candidate that cannot be compared is not worth its load time.
            check_shadow_classes(
                live.classes, stored.classes, live_name=f"{live.model_id} {live.version}", candidate_name=str(run)
            )
            path = await self.registry.fetch(run.model_id, run.version, cache_dir(self.ctx.config))
            detector = await asyncio.to_thread(
                load_for_line, self.ctx.config, path, model_id=run.model_id, version=run.version
            )
        except (RegistryError, ModelLoadError) as exc:
            reason = exc.reason if isinstance(exc, RegistryError) else "SHADOW_MODEL_REFUSED"
            self._set(None, None, str(exc) if str(exc).startswith(reason) else f"{reason}: {exc}")
            log.error(
                "shadow candidate refused; the live model runs on alone",
                candidate=str(run),
                reason=reason,
                error=str(exc),
            )
            return False
        self._set(run, detector, "")
        log.info("shadow candidate running", candidate=str(run), share=run.share, by=run.by)
        return True

    def _set(self, run: ShadowRun | None, detector: Detector | None, refused: str) -> None:
        # A batch may still be running on the candidate replaced: it is closed at the next change, not now.
        if self._retired is not None:
            self._retired.close()
        self._retired = self.detector
        self.run, self.detector, self.refused = run, detector, refused
        self.backlog.clear()  # picked for the candidate replaced
        SHADOW_REFUSED.labels(self.ctx.name).set(1 if refused else 0)
        self.holder.note("shadow", self.detail)

    def pick(self, frames: list[PreparedFrame]) -> None:
        """Add the frames of a live batch the candidate is to see to the backlog (dropping the oldest when full)."""
        run, detector = self.run, self.detector
        if run is None or detector is None:
            return
        chosen = [f for f in frames if sampled(f.frame.part.inspection_id, run.share)]
        SHADOW_FRAMES.labels(self.ctx.name, "not_sampled").inc(len(frames) - len(chosen))
        if list(self.live().card.classes) != list(detector.card.classes):  # the live model was swapped for another
            SHADOW_FRAMES.labels(self.ctx.name, "refused").inc(len(chosen))
            return
        self.backlog.extend(chosen)
        while len(self.backlog) > BACKLOG:
            self.backlog.popleft()
            SHADOW_FRAMES.labels(self.ctx.name, "busy").inc()

    def take(self) -> list[PreparedFrame]:
        """The backlog's next batch for the candidate."""
        size = max(1, self.ctx.config.model.batch_size)
        return [self.backlog.popleft() for _ in range(min(size, len(self.backlog)))]

    def infer(self, frames: list[PreparedFrame]) -> list[InferenceResult]:
        """The candidate's results on `frames` (blocking); a frame it cannot judge is left out, counted and logged."""
        detector = self.detector
        if detector is None or not frames:
            return []
        config = self.ctx.config
        ready = []
        for prepared in frames:
            try:
                # A candidate with another input (size, paired or not) prepares the frame its own way.
                ready.append(
                    prepared if prepared.detector is detector else prepare_frame(prepared.frame, config, detector)
                )
            except FrameError as exc:
                SHADOW_FRAMES.labels(self.ctx.name, "failed").inc()
                log.warning("shadow candidate cannot take the frame", error=str(exc))
        results = []
        for outcome in infer_prepared(ready, config, detector) if ready else []:
            if isinstance(outcome, FrameError):
                SHADOW_FRAMES.labels(self.ctx.name, "failed").inc()
                log.warning("shadow candidate's output cannot be judged", error=str(outcome))
                continue
            SHADOW_FRAMES.labels(self.ctx.name, "run").inc()
            results.append(outcome)
        return results

    async def after_batch(self, frames: list[PreparedFrame], live_waiting: Callable[[], bool]) -> None:
        """Pick the batch's frames for the candidate, then run the backlog a batch at a time while no live frame
        waits (the live results are already handed over), publishing each result."""
        self.pick(frames)
        while self.backlog and not live_waiting() and not self.ctx.stopping.is_set():
            await self._run(self.take())

    async def _run(self, chosen: list[PreparedFrame]) -> None:
        try:
            results = await asyncio.to_thread(self.infer, chosen)
        except Exception as exc:  # noqa: BLE001 - a failing candidate never harms the live line
            SHADOW_FRAMES.labels(self.ctx.name, "failed").inc(len(chosen))
            log.error("shadow candidate failed on a batch", error=f"{type(exc).__name__}: {exc}")
            return
        for result in results:
            try:
                await self.ctx.publish("shadow", result, stage=SHADOW_STAGE)
            except Exception as exc:  # noqa: BLE001 - a lost shadow result is a gap in the report, not a bad part
                SHADOW_FRAMES.labels(self.ctx.name, "failed").inc()
                log.error("shadow result not published", error=f"{type(exc).__name__}: {exc}")


async def start_shadow(ctx: ServiceContext, holder: ModelHolder) -> ShadowModel:
    """The shadow model, following the line's shadow run when the registry is on (no candidate runs without it)."""
    shadow = ShadowModel(ctx, holder)
    if holder.registry is not None:
        runs = holder.registry.watch_shadow(ctx.config.line)
        try:
            await shadow.apply(await anext(runs))
        except BaseException:
            await runs.aclose()  # type: ignore[attr-defined]
            raise
        ctx.run_task(shadow.follow(runs))
    return shadow
