"""Inference speed: the inference service against a bare runtime loop, same model, same threads, one run.

Prints, on one machine in one run:
  bare      images/s of onnxruntime session.run in a loop on a preprocessed board (no decode, no
            letterbox, no NMS, no bus), and its latency p50 / p99 per run; with --backend tensorrt
            --device cuda (a GPU), the TensorRT engine's own execute in a loop instead (as another
            backend's or device's: its runner, without the service);
  service   images/s through the inference service (run in-process on the same runtime): JPEG
            sample boards published to lg.frame on an embedded nats-server all at once, results
            counted as they arrive on lg.inference; the ratio service / bare; and the latency
            p50 / p99 of one frame at a time, publish to result; --rounds times (bare, service, bare),
            the ratio's median over the rounds;
  batching  the same service throughput at each --batch-sizes with --batch-model (which needs a
            dynamic batch axis to batch for real), next to the bare loop at that batch size.

    python benchmarks/inference.py [--frames 60] [--rounds 3] [--threads 0] [--model M] [--batch-model M]
                                   [--batch-sizes 1,4] [--batch-wait-ms 20] [--backend B --device D]
    python benchmarks/inference.py --backend tensorrt --device cuda      # on a GPU, the tensorrt extra
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import structlog

from lineguard.bench.model import Runtime, bare_run
from lineguard.bus import Bus
from lineguard.config import LineConfig, NatsSettings
from lineguard.contracts import msg_id, stream_name, subject
from lineguard.natsserver import EmbeddedNats
from lineguard.samples import SAMPLE_BOARDS
from lineguard.services.inference.service import setup
from lineguard.sim.lineconfig import demo_config_dict
from lineguard.testing import running_service
from lineguard.testing.boards import BOARD_STEMS, board_frame
from lineguard.v1.frame_pb2 import Frame
from lineguard.vision.model import packaged_model_path

BOARDS = [SAMPLE_BOARDS / f"{stem}_test.jpg" for stem in BOARD_STEMS]
FRAME_SUBJECT = subject("frame", "l1", "s1")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def bare_loop(model: Path, runtime: Runtime, runs: int, batch: int = 1) -> tuple[float, list[float]]:
    """images/s and per-run latencies (ms) of the runtime alone (lineguard.bench.model, as `lineguard bench`)."""
    bare = bare_run(model, runtime, runs, batch)
    return bare.images_per_s, bare.latencies_ms


def frame(seq: int) -> Frame:
    """Board seq mod 12 as the simulator camera sends it: the JPEG, its template as the reference."""
    return board_frame(seq, BOARD_STEMS[seq % len(BOARD_STEMS)])


async def through_service(
    url: str, model: Path, runtime: Runtime, batch_size: int, wait_ms: float, frames: int, one_at_a_time: int
) -> tuple[float, list[float]]:
    """images/s with every frame published at once, and latencies (ms) of `one_at_a_time` lone frames."""
    config_dict = demo_config_dict(nats_url=url, database_url="sqlite://", opcua_endpoint="opc.tcp://127.0.0.1:4840/")
    config_dict["model"] = {
        "path": str(model),
        "intra_op_threads": runtime.threads,
        "backend": runtime.backend,
        "device": runtime.device,
        "batch_size": batch_size,
        "batch_wait_ms": wait_ms,
    }
    config = LineConfig(**config_dict)
    driver = await Bus.connect(NatsSettings(url=url), "bench")
    for kind in ("frame", "inference"):
        await driver.js.purge_stream(stream_name(kind))
    arrived: dict[str, int] = {}
    waiting: dict[str, asyncio.Future[None]] = {}

    async def on_result(msg) -> None:
        inspection_id = msg.headers["Nats-Msg-Id"].rsplit(":", 1)[0]
        arrived[inspection_id] = time.perf_counter_ns()
        future = waiting.pop(inspection_id, None)
        if future is not None and not future.done():
            future.set_result(None)

    sub = await driver.nc.subscribe(subject("inference", "l1", "s1"), cb=on_result)
    window = asyncio.Semaphore(64)

    async def send(f: Frame) -> None:
        done = asyncio.get_running_loop().create_future()
        waiting[f.part.inspection_id] = done
        async with window:
            await driver.publish(FRAME_SUBJECT, f, msg_id=msg_id(f.part.inspection_id, "frame"))
        await done

    try:
        async with running_service("inference", config, setup):
            for i in range(3):  # warm up
                await send(frame(i))
            batch = [frame(i) for i in range(frames)]
            started = time.perf_counter()
            async with asyncio.timeout(600):
                await asyncio.gather(*(send(f) for f in batch))
            rate = frames / (time.perf_counter() - started)
            latencies = []
            for i in range(one_at_a_time):
                f = frame(i)
                t = time.perf_counter_ns()
                await send(f)
                latencies.append((arrived[f.part.inspection_id] - t) / 1e6)
    finally:
        await sub.unsubscribe()
        await driver.close()
    return rate, latencies


def row(label: str, rate: float, latencies: list[float], ratio: str = "") -> str:
    return (
        f"{label:<34} {rate:8.2f} img/s   p50 {percentile(latencies, 50):7.1f} ms   "
        f"p99 {percentile(latencies, 99):7.1f} ms   {ratio}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60, help="frames per throughput run")
    parser.add_argument("--latency-frames", type=int, default=30, help="lone frames for the service's latency")
    parser.add_argument("--rounds", type=int, default=3, help="bare / service / bare rounds; the ratio is their median")
    parser.add_argument(
        "--threads", type=int, default=0, help="the runtime's CPU threads, both sides (0: the service's default)"
    )
    parser.add_argument("--backend", default="onnxruntime", help="onnxruntime, tensorrt or openvino, both sides")
    parser.add_argument(
        "--device", default="cpu", help="cpu, cuda (TensorRT, onnxruntime-gpu) or an OpenVINO device, both sides"
    )
    parser.add_argument("--model", type=Path, default=packaged_model_path())
    parser.add_argument("--batch-model", type=Path, default=None, help="default: --model")
    parser.add_argument("--batch-sizes", default="1,4")
    parser.add_argument("--batch-wait-ms", type=float, default=20.0)
    args = parser.parse_args()
    runtime = Runtime(args.backend, args.device, args.threads)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    batch_model = args.batch_model or args.model
    sizes = [int(s) for s in args.batch_sizes.split(",")]

    with tempfile.TemporaryDirectory() as store:
        nats = EmbeddedNats(store_dir=Path(store)).start()
        try:
            print(
                f"model {args.model.name} on {args.backend} ({args.device}), {args.threads} threads, "
                f"{args.frames} frames, "
                f"{len(BOARDS)} sample boards (640 x 640 JPEG, each with its template as the reference)"
            )
            # The bare loop before and after the service in each round, so that a change in the machine's load
            # shows; on a shared VM the rate swings by 20 % from one run to the next, so the figure is the median
            # of the rounds' ratios.
            ratios = []
            for round_no in range(1, args.rounds + 1):
                before, before_lat = bare_loop(args.model, runtime, args.frames)
                rate, lat = await through_service(nats.url, args.model, runtime, 1, 0, args.frames, args.latency_frames)
                after, after_lat = bare_loop(args.model, runtime, args.frames)
                ratios.append(rate / ((before + after) / 2))
                print(f"round {round_no}")
                print(row(f"  {runtime.bare}", before, before_lat))
                print(
                    row(
                        "  service (NATS in, results out)",
                        rate,
                        lat,
                        f"ratio {ratios[-1]:.3f} to the bare mean around it",
                    )
                )
                print(row(f"  {runtime.bare}, again", after, after_lat))
            print(
                f"service / bare: median {float(np.median(ratios)):.3f} of {len(ratios)} rounds "
                f"({', '.join(f'{r:.3f}' for r in ratios)}); target >= 0.9"
            )
            print(f"\nbatching, model {batch_model.name}, batch_wait_ms {args.batch_wait_ms:g}")
            for size in sizes:
                b_rate, b_lat = bare_loop(batch_model, runtime, args.frames, batch=size)
                print(row(f"{runtime.bare}, batch {size}", b_rate, b_lat, "(latency per batch)"))
                s_rate, s_lat = await through_service(
                    nats.url, batch_model, runtime, size, args.batch_wait_ms, args.frames, args.latency_frames
                )
                print(
                    row(
                        f"service, batch_size {size}",
                        s_rate,
                        s_lat,
                        f"ratio {s_rate / b_rate:.3f} to bare batch {size}",
                    )
                )
        finally:
            nats.stop()


if __name__ == "__main__":
    asyncio.run(main())
