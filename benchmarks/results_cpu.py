"""The results service's CPU per part, against a bare nats-py consumer of the same messages in the same run.

One nats-server, one SQLite database, and two processes that read the line's streams through durable consumers
of their own, both running the whole time:
  results  `python -m lineguard.services.results` (the line's configuration: the image archive in a folder,
           --api adds the query API and the dashboard's live feed);
  raw      a bare nats-py process: a pull consumer per kind (frame, decision, ack) that fetches, decodes each
           message's protobuf and acks it, nothing else (what any consumer of these messages must do).
Each round publishes --parts parts at --rate parts/s as a line does: the frame (one of the sample boards, as the
simulator camera sends it: ~60 KiB with its template), the decision --decision-after-ms later (one in --fail-every
a FAIL with two defects, the rest PASS), its PLC ack 2 ms after that; it ends once every part has its row, its
PLC result and its images and the raw consumers have nothing pending. Each process's CPU over the round
(psutil, from /proc: every thread) divided by the parts is its CPU ms per part; the ratio results / raw is the
figure to watch. Rounds are interleaved by nature (both consume the same messages at once); medians and ranges.

    python benchmarks/results_cpu.py [--rounds 5] [--parts 120] [--rate 8] [--api] [--no-archive]
        [--archived 0]

Before the rounds, each process's CPU with nothing to read (--idle-s): heartbeats, polls, timers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from lineguard.bench.rounds import medians_and_ranges
from lineguard.bus import Bus
from lineguard.config import LineConfig
from lineguard.config.model import NatsSettings
from lineguard.contracts import msg_id, subject
from lineguard.natsserver import EmbeddedNats, free_port
from lineguard.services.results.db import upgrade_database
from lineguard.sim.lineconfig import demo_config_dict, write_config
from lineguard.testing.boards import BOARD_STEMS, board_frame
from lineguard.testing.records import sample_ack, sample_decision
from lineguard.v1.decision_pb2 import Verdict

RAW_CONSUMER = r"""
import asyncio, sys
import nats
from lineguard.v1.decision_pb2 import Decision
from lineguard.v1.frame_pb2 import Frame
from lineguard.v1.plc_pb2 import PlcAck

async def consume(js, kind, message_type):
    sub = await js.pull_subscribe(f"lg.{kind}.l1.*", durable=f"raw-{kind}", stream=f"LG_{kind.upper()}")
    while True:
        try:
            msgs = await sub.fetch(64, timeout=1.0)
        except (TimeoutError, nats.errors.TimeoutError):  # no message within the second: ask again
            continue
        for msg in msgs:
            message_type.FromString(msg.data)
            await msg.ack()

async def main():
    nc = await nats.connect(sys.argv[1])
    js = nc.jetstream()
    kinds = (("frame", Frame), ("decision", Decision), ("ack", PlcAck))
    await asyncio.gather(*(consume(js, k, t) for k, t in kinds))

asyncio.run(main())
"""


def line_config(workdir: Path, nats_url: str, api: bool, archive: bool) -> dict[str, Any]:
    config = demo_config_dict(
        nats_url=nats_url,
        database_url=f"sqlite:///{workdir / 'lineguard.db'}",
        opcua_endpoint=f"opc.tcp://127.0.0.1:{free_port()}/lineguard/",
    )
    config["archive"] = {"kind": "folder", "path": str(workdir / "images"), "enabled": archive}
    if api:
        config["api"] = {"enabled": True, "host": "127.0.0.1", "port": free_port()}
    return config


def counts(db: Path, since_sequence: int, archive: bool) -> tuple[int, int, int]:
    """Rows, PLC results and parts with images among the parts of sequence > since_sequence."""
    with sqlite3.connect(db) as conn:
        rows, acked = conn.execute(
            "SELECT count(*), count(plc_delivered_at) FROM inspections WHERE sequence > ?", (since_sequence,)
        ).fetchone()
        imaged = (
            conn.execute(
                "SELECT count(DISTINCT i.inspection_id) FROM inspection_images i JOIN inspections p "
                "ON p.inspection_id = i.inspection_id WHERE p.sequence > ?",
                (since_sequence,),
            ).fetchone()[0]
            if archive
            else rows
        )
    return rows, acked, imaged


def prefill_archive(db: Path, images: int) -> None:
    """`images` rows of images kept before the run (of parts long gone; no files), as a line's archive holds
    weeks of them: what a per-frame read over the whole table costs shows only then."""
    rows = (
        (f"{i:036d}", "thumbnail", f"file:///gone/{i}.jpg", "image/jpeg", 9000, "0" * 64, "2026-01-01 00:00:00")
        for i in range(images)
    )
    with sqlite3.connect(db) as conn:  # foreign keys off (sqlite3's default): the parts' rows are not made
        conn.executemany(
            "INSERT INTO inspection_images (inspection_id, kind, uri, content_type, bytes, sha256, stored_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


async def raw_pending(bus: Bus) -> int:
    left = 0
    for kind in ("frame", "decision", "ack"):
        info = await bus.js.consumer_info(f"LG_{kind.upper()}", f"raw-{kind}")
        left += info.num_pending + info.num_ack_pending
    return left


async def publish_parts(bus: Bus, first: int, parts: int, rate: float, after_s: float, fail_every: int) -> None:
    async def one(seq: int) -> None:
        frame = board_frame(seq, BOARD_STEMS[seq % len(BOARD_STEMS)])
        frame.part.triggered_unix_ns = time.time_ns()
        await bus.publish(subject("frame", "l1", "s1"), frame, msg_id=msg_id(frame.part.inspection_id, "frame"))
        await asyncio.sleep(after_s)
        verdict = Verdict.VERDICT_FAIL if seq % fail_every == 0 else Verdict.VERDICT_PASS
        decision = sample_decision(seq, verdict=verdict, serial=f"LG-{seq:08d}", triggered_ns=time.time_ns())
        decision.part.CopyFrom(frame.part)
        decision.inference.part.CopyFrom(frame.part)
        decision.ocr.part.CopyFrom(frame.part)
        if verdict == Verdict.VERDICT_PASS:
            del decision.inference.detections[:]
            del decision.reason_codes[:]
        await bus.publish(
            subject("decision", "l1", "s1"), decision, msg_id=msg_id(frame.part.inspection_id, "decision")
        )
        await asyncio.sleep(0.002)
        ack = sample_ack(decision, delivered_ns=time.time_ns())
        await bus.publish(subject("ack", "l1", "s1"), ack, msg_id=msg_id(frame.part.inspection_id, "ack"))

    tasks = []
    start = time.monotonic()
    for i in range(parts):
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        tasks.append(asyncio.create_task(one(first + i)))
    await asyncio.gather(*tasks)


def cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


async def run_round(
    args: argparse.Namespace, bus: Bus, db: Path, procs: dict[str, psutil.Process], first: int
) -> dict[str, Any]:
    archive = not args.no_archive
    before = {name: cpu_s(p) for name, p in procs.items()}
    started = time.monotonic()
    await publish_parts(bus, first, args.parts, args.rate, args.decision_after_ms / 1000, args.fail_every)
    deadline = time.monotonic() + 120
    while True:
        rows, acked, imaged = await asyncio.to_thread(counts, db, first - 1, archive)
        left = await raw_pending(bus)
        if min(rows, acked, imaged) >= args.parts and left == 0:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"round did not finish: rows {rows}, acked {acked}, imaged {imaged}, raw left {left}")
        await asyncio.sleep(0.1)
    spent = {name: cpu_s(p) - before[name] for name, p in procs.items()}
    per_part = {name: round(1000 * s / args.parts, 2) for name, s in spent.items()}
    return {
        "results_cpu_ms_per_part": per_part["results"],
        "raw_cpu_ms_per_part": per_part["raw"],
        "ratio": round(per_part["results"] / per_part["raw"], 2),
        "round_s": round(time.monotonic() - started, 1),
        "load": round(os.getloadavg()[0], 2),
    }


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="lg-results-cpu-") as tmp:
        workdir = Path(tmp)
        nats_server = EmbeddedNats(store_dir=workdir / "nats").start()
        children: list[subprocess.Popen[bytes]] = []
        try:
            raw_config = line_config(workdir, nats_server.url, args.api, not args.no_archive)
            config_path = write_config(workdir / "line.yaml", raw_config)
            LineConfig(**raw_config)
            upgrade_database(raw_config["database"]["url"])
            if args.archived:
                prefill_archive(workdir / "lineguard.db", args.archived)
            bus = await Bus.connect(NatsSettings(url=nats_server.url), "producer")  # makes the line's streams
            log = open(workdir / "results.log", "ab")  # noqa: SIM115 - the child writes it until it is stopped
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", args.service, "--config", str(config_path)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            children.append(subprocess.Popen([sys.executable, "-c", RAW_CONSUMER, nats_server.url]))
            procs = {"results": psutil.Process(children[0].pid), "raw": psutil.Process(children[1].pid)}
            db = workdir / "lineguard.db"
            # Warm-up: both started, lazily loaded code loaded, the raw consumers made.
            warm = argparse.Namespace(**{**vars(args), "parts": 10})
            for _ in range(600):
                try:
                    await raw_pending(bus)
                    break
                except Exception:  # noqa: BLE001 - the raw consumers are still being made
                    await asyncio.sleep(0.1)
            await run_round(warm, bus, db, procs, 1)
            before = {name: cpu_s(p) for name, p in procs.items()}
            await asyncio.sleep(args.idle_s)
            idle = {
                f"{n}_idle_cpu_ms_per_s": round(1000 * (cpu_s(p) - before[n]) / args.idle_s, 2)
                for n, p in procs.items()
            }
            print(json.dumps(idle), flush=True)
            figures = []
            first = 100
            for number in range(1, args.rounds + 1):
                row = await run_round(args, bus, db, procs, first)
                first += args.parts
                print(json.dumps({"round": number, **row}), flush=True)
                figures.append(row)
            await bus.close()
            summary = medians_and_ranges(figures)
            print(json.dumps({"summary": summary, **idle, "parts": args.parts, "rate": args.rate, "api": args.api}))
        finally:
            for child in children:
                child.terminate()
            for child in children:
                try:
                    child.wait(20)
                except subprocess.TimeoutExpired:
                    child.kill()
            nats_server.stop()
            if args.keep_log:
                print((workdir / "results.log").read_text()[-4000:], file=sys.stderr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--parts", type=int, default=120)
    parser.add_argument("--rate", type=float, default=8.0, help="parts per second")
    parser.add_argument("--decision-after-ms", type=float, default=100.0, help="frame to decision, as on a line")
    parser.add_argument("--fail-every", type=int, default=5)
    parser.add_argument("--api", action="store_true", help="serve the API and the dashboard's live feed too")
    parser.add_argument("--no-archive", action="store_true", help="archive.enabled false: frames not read")
    parser.add_argument("--idle-s", type=float, default=5.0, help="CPU of each process with nothing published, first")
    parser.add_argument("--archived", type=int, default=0, help="image rows in the archive before the run")
    parser.add_argument("--service", default="lineguard.services.results", help=argparse.SUPPRESS)
    parser.add_argument("--keep-log", action="store_true", help="print the end of the service's log")
    asyncio.run(main(parser.parse_args()))
