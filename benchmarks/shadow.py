"""Shadow mode's cost: the inference service with the live model only, with a candidate in shadow on every part,
and the bare runtime running the model once and twice per frame, in one run, in interleaved rounds.

The live model and the candidate are the same file (the packaged model) under two registry versions, so the
candidate's own time is one more model run. Each round, in order:
  bare       onnxruntime session.run on a prepared board, once per frame (one_ms) and twice (two_ms): the
             candidate's bare time is two_ms - one_ms;
  live       the inference service (model from the registry, no shadow run): one frame at a time, publish to its
             lg.inference result (live_ms);
  shadow     the same with `model shadow start` on every part (share 1): publish to the candidate's lg.shadow
             result, the frame's whole work (cycle_ms), and publish to the live result (shadow_live_ms);
             then `paced`: frames at a fixed interval (--interval-ms) with their live latencies, p50 / p99, against
             the live service's at the same interval (a live frame may wait for one candidate batch);
and the figures are each round's, summed up as the median and range over the rounds (lineguard.testing.rounds).

The target: shadow costs the candidate's time and nothing more, i.e. cost_ms = cycle_ms - live_ms is about
candidate_ms = two_ms - one_ms (cost_ratio = cost_ms / candidate_ms about 1, overhead_ms = cost_ms - candidate_ms
about 0), and the live frame's own latency (shadow_live_ms) is the live service's (live_ms).

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


def bare(model: Path, threads: int, frames: int) -> tuple[float, float]:
    """Median ms per frame of the bare runtime running the model once, and twice, per frame (interleaved)."""
    import onnxruntime as ort

    board = cv2.imread(str(SAMPLE_BOARDS / f"{BOARD_STEMS[0]}_test.jpg"))
    template = cv2.imread(str(SAMPLE_BOARDS / f"{BOARD_STEMS[0]}_temp.jpg"))
    tensor = prepare(load_model(model, intra_op_threads=1), board, reference=template).tensor
    options = ort.SessionOptions()
    apply_threads(options, threads)  # the service's thread settings (spinning off), so both sides run alike
    session = ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for _ in range(3):
        session.run(None, {name: tensor})
    once, twice = [], []
    for _ in range(frames):
        t = time.perf_counter()
        session.run(None, {name: tensor})
        once.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        session.run(None, {name: tensor})
        session.run(None, {name: tensor})
        twice.append((time.perf_counter() - t) * 1000)
    return statistics.median(once), statistics.median(twice)


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
    config: LineConfig, driver: Bus, results: Results, frames: int, shadow: bool, interval_ms: float
) -> dict[str, float]:
    """One phase: lone frames (live latency and, with shadow, the cycle to the candidate's result), then paced
    frames' live latencies."""
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
            lone, cycles = [], []
            for seq in range(frames):
                part, started, live, candidate = await send(seq)
                await live
                lone.append(took(started, part, "inference"))
                if candidate is not None:
                    await candidate
                    cycles.append(took(started, part, "shadow"))
            figures["live_ms" if not shadow else "shadow_live_ms"] = statistics.median(lone)
            if cycles:
                figures["cycle_ms"] = statistics.median(cycles)
            if interval_ms > 0:
                paced, pending = [], []
                for seq in range(frames):
                    pending.append(await send(seq))
                    await asyncio.sleep(interval_ms / 1000)
                for part, started, live, candidate in pending:
                    await asyncio.gather(live, *([candidate] if candidate else []))
                    paced.append(took(started, part, "inference"))
                tag = "shadow_paced" if shadow else "live_paced"
                figures[f"{tag}_p50_ms"] = float(np.percentile(paced, 50))
                figures[f"{tag}_p99_ms"] = float(np.percentile(paced, 99))
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
            try:
                for round_no in range(1, args.rounds + 1):
                    one, two = bare(live_model, args.threads, args.frames)
                    async with connect_registry(nats.url) as registry:
                        await registry.stop_shadow("l1")
                    live = await through_service(config, driver, results, args.frames, False, args.interval_ms)
                    async with connect_registry(nats.url) as registry:
                        await registry.start_shadow(MODEL_ID, CANDIDATE, "l1", share=1.0)
                    shadow = await through_service(config, driver, results, args.frames, True, args.interval_ms)
                    figures = {"one_ms": one, "two_ms": two, **live, **shadow}
                    figures["candidate_ms"] = two - one
                    figures["cost_ms"] = shadow["cycle_ms"] - live["live_ms"]
                    figures["cost_ratio"] = figures["cost_ms"] / figures["candidate_ms"]
                    figures["overhead_ms"] = figures["cost_ms"] - figures["candidate_ms"]
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
