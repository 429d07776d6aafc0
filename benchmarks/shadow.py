"""Shadow mode's cost: the inference service with the live model only, with a candidate in shadow on every part,
and the bare runtime running the model once and twice per frame, in one run, in interleaved rounds.

The live model and the candidate are the same file (the packaged model) under two registry versions, so the
candidate's own time is one more model run. Each round has two phases, each a fresh inference service taking its
model from the registry: `live` (no shadow run) and `shadow` (`model shadow start` on every part, share 1). In each
phase every lone frame comes right after the bare runtime (onnxruntime session.run on a prepared board, with the
service's thread settings) has run the model once (one_ms) and twice (two_ms), so both sides see the same load:
  <phase>_live_ms     publish to the frame's lg.inference result; <phase>_live_ratio: over the bare run's
  cycle_ms            (shadow) publish to the candidate's lg.shadow result: the frame's whole work
  cost_ms             (shadow) per frame, cycle - live: what the candidate added
  candidate_ms        (shadow) per frame, two_ms - one_ms: the candidate's bare time
  cost_ratio          cost_ms / candidate_ms; overhead_ms: cost_ms - candidate_ms
  live_slowdown       shadow_live_ratio / live_live_ratio: the live result's time with a candidate, against without
  <phase>_paced_*     with --interval-ms, frames at that interval: their live latency p50 / p99 (a live frame may
                      wait for one candidate batch)
Figures are medians over the phase's frames, then the median and range over the rounds (lineguard.testing.rounds).

The target: shadow costs the candidate's time and nothing more: cost_ratio about 1 (overhead_ms about 0) and
live_slowdown about 1.

    python benchmarks/shadow.py [--rounds 5] [--frames 30] [--threads 2] [--interval-ms 0] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import structlog
from nats.aio.msg import Msg

from lineguard.bus import Bus
from lineguard.config import LineConfig, NatsSettings
from lineguard.contracts import msg_id, subject
from lineguard.natsserver import EmbeddedNats
from lineguard.registry import connect_registry
from lineguard.samples import SAMPLE_BOARDS
from lineguard.services.inference.service import setup
from lineguard.sim.lineconfig import demo_config_dict
from lineguard.testing import running_service
from lineguard.testing.boards import BOARD_STEMS, board_frame
from lineguard.testing.models import MODEL_ID, model_version, trust_dir
from lineguard.testing.rounds import medians_and_ranges
from lineguard.vision.backends.onnxruntime import apply_threads
from lineguard.vision.detect import prepare
from lineguard.vision.model import load_model

LIVE, CANDIDATE = "1.0.0", "2.0.0"


class Bare:
    """The bare runtime on a prepared board: onnxruntime session.run, with the service's thread settings."""

    def __init__(self, model: Path, threads: int):
        import onnxruntime as ort

        board = cv2.imread(str(SAMPLE_BOARDS / f"{BOARD_STEMS[0]}_test.jpg"))
        template = cv2.imread(str(SAMPLE_BOARDS / f"{BOARD_STEMS[0]}_temp.jpg"))
        self.tensor = prepare(load_model(model, intra_op_threads=1), board, reference=template).tensor
        options = ort.SessionOptions()
        apply_threads(options, threads)  # spinning off, as the service runs it
        self.session = ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
        self.name = self.session.get_inputs()[0].name
        for _ in range(3):
            self.runs(1)

    def runs(self, n: int) -> float:
        """ms for `n` runs of the model, one after the other (a frame's live run, and the candidate's)."""
        t = time.perf_counter()
        for _ in range(n):
            self.session.run(None, {self.name: self.tensor})
        return (time.perf_counter() - t) * 1000


class Results:
    """When each part's live (lg.inference) and candidate (lg.shadow) results arrived."""

    def __init__(self) -> None:
        self.arrived: dict[tuple[str, str], int] = {}
        self.waiting: dict[tuple[str, str], asyncio.Future[None]] = {}

    def expect(self, inspection_id: str, kind: str) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        self.waiting[(inspection_id, kind)] = future
        return future

    async def on_message(self, msg: Msg) -> None:
        kind = msg.subject.split(".")[1]
        inspection_id = msg.headers["Nats-Msg-Id"].rsplit(":", 1)[0]
        self.arrived[(inspection_id, kind)] = time.perf_counter_ns()
        future = self.waiting.pop((inspection_id, kind), None)
        if future is not None and not future.done():
            future.set_result(None)


async def through_service(
    config: LineConfig, driver: Bus, results: Results, bare: Bare, frames: int, shadow: bool, interval_ms: float
) -> dict[str, float]:
    """One phase: lone frames (live latency and, with shadow, the cycle to the candidate's result), each after the
    bare runtime's one and two runs (so both sides see the same load), then paced frames' live latencies."""
    figures: dict[str, float] = {}
    async with running_service("inference", config, setup):

        async def send(seq: int) -> tuple[str, int, asyncio.Future[None], asyncio.Future[None] | None]:
            frame = board_frame(seq, BOARD_STEMS[seq % len(BOARD_STEMS)])
            part = frame.part.inspection_id
            live = results.expect(part, "inference")
            candidate = results.expect(part, "shadow") if shadow else None
            started = time.perf_counter_ns()
            await driver.publish(subject("frame", "l1", "s1"), frame, msg_id=msg_id(part, "frame"))
            return part, started, live, candidate

        def took(started: int, part: str, kind: str) -> float:
            return (results.arrived[(part, kind)] - started) / 1e6

        async with asyncio.timeout(600):
            for seq in range(3):  # warm up: the first runs of a session are slow
                _, _, live, candidate = await send(seq)
                await asyncio.gather(live, *([candidate] if candidate else []))
            lone, cycles, ones, twos, extra, candidate_bare = [], [], [], [], [], []
            for seq in range(frames):
                ones.append(bare.runs(1))
                twos.append(bare.runs(2))
                part, started, live, candidate = await send(seq)
                await live
                lone.append(took(started, part, "inference"))
                if candidate is not None:
                    await candidate
                    cycles.append(took(started, part, "shadow"))
                    extra.append(cycles[-1] - lone[-1])
                    candidate_bare.append(twos[-1] - ones[-1])
            tag = "shadow" if shadow else "live"
            figures[f"{tag}_one_ms"] = statistics.median(ones)
            figures[f"{tag}_live_ms"] = statistics.median(lone)
            figures[f"{tag}_live_ratio"] = statistics.median(lone) / statistics.median(ones)
            if shadow:
                figures["two_ms"] = statistics.median(twos)
                figures["cycle_ms"] = statistics.median(cycles)
                figures["cycle_ratio"] = statistics.median(cycles) / statistics.median(twos)
                figures["candidate_ms"] = statistics.median(candidate_bare)
                figures["cost_ms"] = statistics.median(extra)
            if interval_ms > 0:
                paced, pending = [], []
                for seq in range(frames):
                    pending.append(await send(seq))
                    await asyncio.sleep(interval_ms / 1000)
                for part, started, live, candidate in pending:
                    await asyncio.gather(live, *([candidate] if candidate else []))
                    paced.append(took(started, part, "inference"))
                figures[f"{tag}_paced_p50_ms"] = float(np.percentile(paced, 50))
                figures[f"{tag}_paced_p99_ms"] = float(np.percentile(paced, 99))
    return figures


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--frames", type=int, default=30, help="lone frames per phase (and paced ones)")
    parser.add_argument("--threads", type=int, default=2, help="the runtime's CPU threads, every side")
    parser.add_argument(
        "--interval-ms", type=float, default=0.0, help="also frames at this interval, their live latency (0: not)"
    )
    parser.add_argument("--json", action="store_true", help="the summary as JSON")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        nats = EmbeddedNats(store_dir=folder / "nats").start()
        try:
            live_model = model_version(folder / "models", LIVE)
            async with connect_registry(nats.url) as registry:
                await registry.push(live_model)
                await registry.push(model_version(folder / "models", CANDIDATE))
                await registry.promote(MODEL_ID, LIVE, "l1")
            raw = demo_config_dict(
                nats_url=nats.url, database_url="sqlite://", opcua_endpoint="opc.tcp://127.0.0.1:4840/"
            )
            raw["model"] = {
                "registry": True,
                "cache_dir": str(folder / "cache"),
                "trusted_keys_dir": str(trust_dir(folder / "trusted")),
                "intra_op_threads": args.threads,
                "batch_size": 1,
            }
            config = LineConfig(**raw)
            driver = await Bus.connect(NatsSettings(url=nats.url), "bench")
            results = Results()
            subs = [
                await driver.nc.subscribe(subject(kind, "l1", "s1"), cb=results.on_message)
                for kind in ("inference", "shadow")
            ]
            rounds = []
            bare = Bare(live_model, args.threads)
            try:
                for round_no in range(1, args.rounds + 1):
                    async with connect_registry(nats.url) as registry:
                        await registry.stop_shadow("l1")
                    live = await through_service(config, driver, results, bare, args.frames, False, args.interval_ms)
                    async with connect_registry(nats.url) as registry:
                        await registry.start_shadow(MODEL_ID, CANDIDATE, "l1", share=1.0)
                    shadow = await through_service(config, driver, results, bare, args.frames, True, args.interval_ms)
                    figures = {**live, **shadow}
                    figures["cost_ratio"] = figures["cost_ms"] / figures["candidate_ms"]
                    figures["overhead_ms"] = figures["cost_ms"] - figures["candidate_ms"]
                    figures["live_slowdown"] = figures["shadow_live_ratio"] / figures["live_live_ratio"]
                    rounds.append(figures)
                    if not args.json:
                        print(f"round {round_no}: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()))
            finally:
                for sub in subs:
                    await sub.unsubscribe()
                await driver.close()
        finally:
            nats.stop()
    summary = medians_and_ranges(rounds, digits=2)
    if args.json:
        print(json.dumps({"rounds": len(rounds), "threads": args.threads, **summary}, indent=2))
        return
    print(f"\n{len(rounds)} rounds, {args.frames} frames a phase, {args.threads} threads; median [range]:")
    for key in rounds[0]:
        print(f"  {key:<22} {summary[key]:>9} {summary[f'{key}_range']}")


if __name__ == "__main__":
    asyncio.run(main())
