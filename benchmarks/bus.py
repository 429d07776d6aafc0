"""Bus overhead: the library's publish + Worker path against bare nats-py, same server, same payload.

Prints, in one run on one embedded nats-server, for each of --rounds interleaved rounds:
  throughput   messages/s through Bus.publish (Nats-Msg-Id, awaited PubAck; 256 publishers at
               once, each awaiting its own message's ack before its next, as a service's
               handlers do) + Worker (decode, handler, ack), against a bare js.publish_async +
               pull-fetch loop (no message id, no decode) with the same payload and fetch
               batch; and their ratio;
  latency      one hop, publish call to handler start, p50 / p99, against the same hop with
               js.publish + fetch; and the added latency at p50 and p99;
then the medians and ranges over the rounds, and the same as one JSON line (the last line).

    python benchmarks/bus.py [--messages 5000] [--hops 300] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import nats

from lineguard.bus import Bus, Delivery, Worker
from lineguard.config import NatsSettings
from lineguard.contracts import msg_id, stream_name, subject
from lineguard.natsserver import EmbeddedNats
from lineguard.testing.records import triggered_part
from lineguard.testing.rounds import medians_and_ranges
from lineguard.v1.common_pb2 import Box
from lineguard.v1.inference_pb2 import Detection, InferenceResult

WINDOW = 256
SUBJECT = subject("inference", "l1", "s1")


def payload_message(seq: int) -> InferenceResult:
    """About 1 KiB: an inference result with ten detections, what most hops carry."""
    part = triggered_part(seq)
    dets = [
        Detection(
            class_name="short",
            class_id=1,
            score=0.9,
            box=Box(x1=i, y1=i, x2=i + 20, y2=i + 20),
            area_px=400,
            area_mm2=0.17,
        )
        for i in range(10)
    ]
    return InferenceResult(part=part, model_id="yolo11n-deeppcb", model_version="1", detections=dets)


async def purge(js) -> None:
    await js.purge_stream(stream_name("inference"))


async def library_throughput(url: str, n: int) -> float:
    bus = await Bus.connect(NatsSettings(url=url), "bench")
    await purge(bus.js)
    messages = [payload_message(i) for i in range(n)]
    received = 0
    done = asyncio.Event()

    async def handle(d: Delivery[InferenceResult]) -> None:
        nonlocal received
        received += 1
        if received >= n:
            done.set()

    worker = Worker(
        bus,
        kind="inference",
        line="l1",
        message_type=InferenceResult,
        handler=handle,
        durable=f"bench-lib-{time.time_ns()}",
    )
    await worker.start()
    stopping = asyncio.Event()
    started = time.perf_counter()
    consumer = asyncio.create_task(worker.run(stopping))

    # WINDOW publishers at once, each awaiting its own message's ack before its next, as a service's handlers do.
    async def publisher(lane: int) -> None:
        for m in messages[lane::WINDOW]:
            await bus.publish(SUBJECT, m, msg_id=msg_id(m.part.inspection_id, "inference"))

    await asyncio.gather(*(publisher(lane) for lane in range(WINDOW)))
    await done.wait()
    elapsed = time.perf_counter() - started
    stopping.set()
    await consumer
    await bus.close()
    return n / elapsed


async def bare_throughput(url: str, n: int, batch: int) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await purge(js)
    payloads = [payload_message(i).SerializeToString() for i in range(n)]
    sub = await js.pull_subscribe(SUBJECT, durable=f"bench-bare-{time.time_ns()}", stream=stream_name("inference"))
    received = 0

    async def consume() -> None:
        nonlocal received
        while received < n:
            try:
                msgs = await sub.fetch(batch, timeout=0.5)
            except nats.errors.TimeoutError:
                continue
            for m in msgs:
                await m.ack()
                received += 1

    started = time.perf_counter()
    consumer = asyncio.create_task(consume())
    futures = [await js.publish_async(SUBJECT, p) for p in payloads]
    await asyncio.gather(*futures)
    await consumer
    elapsed = time.perf_counter() - started
    await sub.unsubscribe()
    await nc.close()
    return n / elapsed


async def library_hop(url: str, hops: int) -> list[float]:
    bus = await Bus.connect(NatsSettings(url=url), "bench")
    await purge(bus.js)
    arrived: asyncio.Queue[int] = asyncio.Queue()

    async def handle(d: Delivery[InferenceResult]) -> None:
        arrived.put_nowait(time.perf_counter_ns())

    worker = Worker(
        bus,
        kind="inference",
        line="l1",
        message_type=InferenceResult,
        handler=handle,
        durable=f"bench-hop-{time.time_ns()}",
    )
    await worker.start()
    stopping = asyncio.Event()
    consumer = asyncio.create_task(worker.run(stopping))
    out = []
    for i in range(hops):
        m = payload_message(i)
        t0 = time.perf_counter_ns()
        await bus.publish(SUBJECT, m, msg_id=msg_id(m.part.inspection_id, "inference"))
        out.append((await arrived.get() - t0) / 1e6)
    stopping.set()
    await consumer
    await bus.close()
    return out


async def bare_hop(url: str, hops: int, batch: int) -> list[float]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await purge(js)
    sub = await js.pull_subscribe(SUBJECT, durable=f"bench-barehop-{time.time_ns()}", stream=stream_name("inference"))
    arrived: asyncio.Queue[int] = asyncio.Queue()
    stop = False

    async def consume() -> None:
        while not stop:
            try:
                msgs = await sub.fetch(batch, timeout=0.5)
            except nats.errors.TimeoutError:
                continue
            for m in msgs:
                arrived.put_nowait(time.perf_counter_ns())
                await m.ack()

    consumer = asyncio.create_task(consume())
    payloads = [payload_message(i).SerializeToString() for i in range(hops)]
    out = []
    for p in payloads:
        t0 = time.perf_counter_ns()
        await js.publish(SUBJECT, p)
        out.append((await arrived.get() - t0) / 1e6)
    stop = True
    await consumer
    await nc.close()
    return out


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def one_round(url: str, n: int, hops: int, batch: int, library_first: bool) -> dict[str, float]:
    sides = {
        "library": (lambda: library_throughput(url, n), lambda: library_hop(url, hops)),
        "bare": (lambda: bare_throughput(url, n, batch), lambda: bare_hop(url, hops, batch)),
    }
    order = ["library", "bare"] if library_first else ["bare", "library"]
    rate = {side: await sides[side][0]() for side in order}
    hop = {side: await sides[side][1]() for side in order}
    figures = {
        "library_msg_s": rate["library"],
        "bare_msg_s": rate["bare"],
        "ratio": rate["library"] / rate["bare"],
    }
    for side in ("library", "bare"):
        figures[f"{side}_hop_p50_ms"] = pct(hop[side], 50)
        figures[f"{side}_hop_p99_ms"] = pct(hop[side], 99)
    figures["added_p50_ms"] = figures["library_hop_p50_ms"] - figures["bare_hop_p50_ms"]
    figures["added_p99_ms"] = figures["library_hop_p99_ms"] - figures["bare_hop_p99_ms"]
    return figures


async def main(n: int, hops: int, rounds: int) -> None:
    batch = NatsSettings().fetch_batch
    results = []
    with tempfile.TemporaryDirectory() as store, EmbeddedNats(store_dir=Path(store)) as server:
        await library_throughput(server.url, min(n, 1000))  # warm the server and the imports before round 1
        for r in range(rounds):
            # Order alternates so neither side always runs on a warmer (or busier) machine.
            figures = await one_round(server.url, n, hops, batch, library_first=r % 2 == 0)
            results.append(figures)
            print(
                f"round {r + 1}: library {figures['library_msg_s']:7.0f} msg/s  "
                f"bare {figures['bare_msg_s']:7.0f} msg/s  "
                f"ratio {figures['ratio']:.3f}   hop p50 / p99 library {figures['library_hop_p50_ms']:.3f} / "
                f"{figures['library_hop_p99_ms']:.3f} ms  bare {figures['bare_hop_p50_ms']:.3f} / "
                f"{figures['bare_hop_p99_ms']:.3f} ms"
            )
    summary: dict[str, object] = {
        "benchmark": "bus",
        "payload_bytes": len(payload_message(0).SerializeToString()),
        "messages": n,
        "hops": hops,
        "rounds": rounds,
        "fetch_batch": batch,
        "publishers": WINDOW,
    }
    summary.update(medians_and_ranges(results))
    print(
        f"median of {rounds}: ratio {summary['ratio']:.3f} ({summary['ratio_range'][0]:.3f} - "  # type: ignore[index]
        f"{summary['ratio_range'][1]:.3f}), added per hop p50 {summary['added_p50_ms']:+.3f} ms, "  # type: ignore[index]
        f"p99 {summary['added_p99_ms']:+.3f} ms"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--hops", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians and ranges over them")
    args = parser.parse_args()
    asyncio.run(main(args.messages, args.hops, args.rounds))
