"""What a part costs the bus: messages and bytes through nats-server per part, per service connection, in the
demo line (lineguard.bench.line: secured server, the shipped model, a simulated OPC UA PLC), with each process's CPU
per part over the same run.

The server's own counters (/connz, /varz of its monitoring port) are read before and after `--parts` parts at
`--rate`; the embedded server is started without a monitoring port, so this script starts it through a wrapper
that adds one (`-m`). Idle work (heartbeats, an idle consumer's pull requests) counts in, shared by the run's parts:
at a low rate it weighs more per part. `--idle S` measures it first on its own: S seconds with the PLC connected and
no part, each process's CPU ms a second (/proc/<pid>/stat) and the server's messages a second.

    python benchmarks/line_messages.py [--rate 3] [--parts 60] [--idle 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import lineguard.natsserver as natsserver
from lineguard.bench.line import CpuClock, connected_plc, drive, settle, start_line
from lineguard.localline import LocalLine
from lineguard.natsserver import free_port

FIELDS = ("in_msgs", "out_msgs", "in_bytes", "out_bytes")


def monitored_server(port: int) -> None:
    """Make the line's nats-server start with its monitoring port on `port`."""
    real = natsserver.nats_server_binary()
    wrapper = Path(tempfile.mkdtemp(prefix="lineguard-nats-")) / "nats-server"
    wrapper.write_text(f'#!/bin/sh\nexec "{real}" -m {port} "$@"\n')
    wrapper.chmod(0o755)
    natsserver.nats_server_binary = lambda: str(wrapper)  # type: ignore[assignment]


def read(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}") as reply:
        return json.load(reply)


def connections(port: int) -> dict[str, dict[str, int]]:
    """Each service connection's counters, by its name (lineguard-<service>)."""
    found: dict[str, dict[str, int]] = {}
    for c in read(port, "connz?limit=1000")["connections"]:
        name = c.get("name") or f"cid {c['cid']}"
        totals = found.setdefault(name, dict.fromkeys(FIELDS, 0))
        for key in FIELDS:
            totals[key] += c[key]
    return found


async def idle(line: LocalLine, port: int, seconds: float) -> dict[str, Any]:
    """Each process's CPU ms a second and the server's messages (in + out) a second, with nothing triggered."""
    clock = CpuClock(line)
    cpu_before, server_before, started = clock.read(), read(port, "varz"), time.perf_counter()
    await asyncio.sleep(seconds)
    cpu_after, server_after = clock.read(), read(port, "varz")
    elapsed = time.perf_counter() - started
    msgs = sum(server_after[k] - server_before[k] for k in ("in_msgs", "out_msgs"))
    return {
        "cpu_ms_per_s": {name: round((cpu_after[name] - cpu_before[name]) * 1000 / elapsed, 1) for name in cpu_after},
        "msgs_per_s": round(msgs / elapsed, 1),
    }


async def measure(rate: float, parts: int, port: int, idle_s: float = 0.0) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="lineguard-bench-")) / "line"
    line = await asyncio.to_thread(start_line, workdir)
    try:
        plc = await connected_plc(line)
        try:
            await drive(line, plc, 2.0, 10)  # warm up
            await settle(2.0)
            quiet = await idle(line, port, idle_s) if idle_s > 0 else None
            before, server_before = connections(port), read(port, "varz")
            run = await drive(line, plc, rate, parts)
            await settle(1.0)
            after, server_after = connections(port), read(port, "varz")
        finally:
            await plc.__aexit__(None, None, None)
    finally:
        await asyncio.to_thread(line.stop)
    per_connection = {}
    for name in sorted(set(before) & set(after)):
        # The server's in_* are what the client sent it, out_* what it sent the client.
        sent, got = (after[name][k] - before[name][k] for k in ("in_msgs", "out_msgs"))
        sent_b, got_b = (after[name][k] - before[name][k] for k in ("in_bytes", "out_bytes"))
        per_connection[name] = {
            "sent_msgs": round(sent / parts, 1),
            "received_msgs": round(got / parts, 1),
            "sent_kib": round(sent_b / parts / 1024, 1),
            "received_kib": round(got_b / parts / 1024, 1),
        }
    total = {k: round((server_after[k] - server_before[k]) / parts / (1 if "msgs" in k else 1024), 1) for k in FIELDS}
    return {
        "rate": rate,
        "parts": parts,
        "judged": run.judged,
        "server_per_part": {
            "msgs_in": total["in_msgs"],
            "msgs_out": total["out_msgs"],
            "kib_in": total["in_bytes"],
            "kib_out": total["out_bytes"],
        },
        "per_connection": per_connection,
        "cpu_ms_per_part": run.cpu_ms_per_part,
        **({"idle": quiet} if quiet is not None else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=3.0, help="parts per second")
    parser.add_argument("--parts", type=int, default=60)
    parser.add_argument("--idle", type=float, default=0.0, help="seconds of idle measured first (0: none)")
    args = parser.parse_args()
    port = free_port("127.0.0.1")
    monitored_server(port)
    result = asyncio.run(measure(args.rate, args.parts, port, args.idle))
    for name, figures in result["per_connection"].items():
        print(f"{name:24s} {json.dumps(figures)}")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
