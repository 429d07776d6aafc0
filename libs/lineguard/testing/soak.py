"""The soak (issue 13): the line at a steady rate for a long while, OPC UA sessions opened and closed against the
gateway's server meanwhile, each process's memory, file descriptors and threads sampled.

The line is `lineguard demo`'s (LocalLine); the simulated PLC triggers parts at `rate_hz` on its own session for the
whole run while `sessions` other clients each connect to the gateway's OPC UA server, read the station's result and
heartbeat, and disconnect (a few at a time, spread evenly over the run: HMIs, engineering tools, a second PLC
probing). Every `sample_s` each service's and the nats-server's process is read from /proc (VmRSS, open file
descriptors, threads). At the end the invariants are the end-to-end test's: every part one result and one row,
the rows' PLC columns agreeing, every session opened and closed, every service alive; and each process's growth is
its last quarter's median over its first quarter's (after a warm-up), in absolute figures and as a ratio.

`benchmarks/soak.py` runs it for an hour; `tests/chaos/test_soak.py` for a minute."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncua import Client

from lineguard.contracts import opcua as contract
from lineguard.localline import SERVICES, LocalLine
from lineguard.sim.plc import SESSION_TIMEOUT_MS, PlcResult, SimulatedPlc, paced, percentile
from lineguard.sim.plc_columns import check_plc_columns, read_plc_rows

METRICS = ("rss_mib", "fds", "threads")


def sample_process(pid: int) -> dict[str, float] | None:
    """VmRSS (MiB), open file descriptors and threads of `pid` (Linux /proc); None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_mib": int(fields["VmRSS"].split()[0]) / 1024,
        "fds": float(fds),
        "threads": float(fields["Threads"].strip()),
    }


@dataclass
class Soak:
    duration_s: float
    rate_hz: float
    sessions: int
    samples: dict[str, list[tuple[float, dict[str, float]]]] = field(default_factory=dict)  # by process
    sessions_opened: int = 0
    sessions_closed: int = 0
    session_errors: list[str] = field(default_factory=list)
    session_ms: list[float] = field(default_factory=list)  # connect + reads + disconnect, each
    results: int = 0
    missing: int = 0
    duplicates: int = 0
    timeouts: int = 0
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    rows: int = 0
    plc_columns: str = ""
    plc_columns_ok: bool = False
    alive: dict[str, bool] = field(default_factory=dict)
    codes: dict[str, int | None] = field(default_factory=dict)
    received: list[PlcResult] = field(default_factory=list)  # the first result of each part

    def growth(self, warmup_s: float) -> dict[str, dict[str, dict[str, Any]]]:
        """Per process and metric: the median of the first quarter after `warmup_s`, of the last quarter, the
        difference and the ratio (last / first)."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for name, series in self.samples.items():
            kept = [values for at, values in series if at >= warmup_s]
            if len(kept) < 4:
                continue
            quarter = max(1, len(kept) // 4)
            out[name] = {}
            for metric in METRICS:
                first = statistics.median(v[metric] for v in kept[:quarter])
                last = statistics.median(v[metric] for v in kept[-quarter:])
                out[name][metric] = {
                    "first": round(first, 1),
                    "last": round(last, 1),
                    "growth": round(last - first, 1),
                    "ratio": round(last / first, 3) if first else float("nan"),
                    "max": round(max(v[metric] for v in kept), 1),
                }
            # The shape of memory over the run (a plateau is a bound filling, a line a leak): a median per tenth.
            tenth = max(1, len(kept) // 10)
            out[name]["rss_mib"]["tenths"] = [
                round(statistics.median(v["rss_mib"] for v in kept[i : i + tenth]), 1)
                for i in range(0, len(kept) - tenth + 1, tenth)
            ][:10]
        return out

    def figures(self, warmup_s: float) -> dict[str, Any]:
        return {
            "duration_s": self.duration_s,
            "rate_hz": self.rate_hz,
            "parts": self.results + self.missing,
            "results": self.results,
            "missing": self.missing,
            "duplicates": self.duplicates,
            "fail_timeouts": self.timeouts,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p99_ms": self.latency_p99_ms,
            "rows": self.rows,
            "plc_columns": self.plc_columns,
            "sessions": {
                "asked": self.sessions,
                "opened": self.sessions_opened,
                "closed": self.sessions_closed,
                "errors": self.session_errors[:10],
                "p50_ms": round(percentile(self.session_ms, 50), 1),
                "p99_ms": round(percentile(self.session_ms, 99), 1),
            },
            "alive": self.alive,
            "exit_codes": self.codes,
            "growth": self.growth(warmup_s),
        }


def _pids(line: LocalLine) -> dict[str, int]:
    pids = {name: line.processes[name].pid for name in SERVICES}
    if line.nats is not None and line.nats.process is not None:
        pids["nats-server"] = line.nats.process.pid
    return pids


async def _sample(line: LocalLine, soak: Soak, started: float, every_s: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        at = time.perf_counter() - started
        for name, pid in _pids(line).items():
            values = await asyncio.to_thread(sample_process, pid)
            if values is not None:
                soak.samples.setdefault(name, []).append((at, values))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)


async def _one_session(endpoint: str, soak: Soak) -> None:
    """What an HMI does: connect, read the station's last result and heartbeat, disconnect."""
    began = time.perf_counter()
    client = Client(endpoint, timeout=10)
    client.session_timeout = SESSION_TIMEOUT_MS
    try:
        await client.connect()
        soak.sessions_opened += 1
        try:
            idx = await client.get_namespace_index(contract.NAMESPACE_URI)
            for name in (contract.RESULT_SEQUENCE, contract.HEARTBEAT):
                await client.get_node(f"ns={idx};s={contract.node_path('s1', name)}").read_value()
        finally:
            await client.disconnect()
            soak.sessions_closed += 1
    except Exception as exc:  # noqa: BLE001 - counted: a session the server refused or dropped
        soak.session_errors.append(repr(exc))
        return
    soak.session_ms.append((time.perf_counter() - began) * 1000)


async def _churn(endpoint: str, soak: Soak, over_s: float, concurrency: int = 4) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await _one_session(endpoint, soak)

    tasks = []
    async for _ in paced(soak.sessions, soak.sessions / over_s):
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)


async def drive(line: LocalLine, soak: Soak, *, sample_s: float) -> None:
    parts = max(1, round(soak.duration_s * soak.rate_hz))
    stop = asyncio.Event()
    started = time.perf_counter()
    sampler = asyncio.create_task(_sample(line, soak, started, sample_s, stop))
    try:
        async with SimulatedPlc(line.opcua_endpoint) as plc:
            churn = (
                asyncio.create_task(_churn(line.opcua_endpoint, soak, 0.95 * soak.duration_s))
                if soak.sessions
                else None
            )
            report = await plc.run(parts, soak.rate_hz, result_timeout_s=60)
            if churn is not None:
                await churn
        soak.results, soak.missing, soak.duplicates = len(report.results), len(report.missing), len(report.duplicates)
        soak.timeouts = sum(1 for r in report.results if "TIMEOUT" in r.reasons)
        soak.latency_p50_ms = round(report.p50_s * 1000, 1)
        soak.latency_p99_ms = round(report.p99_s * 1000, 1)
        soak.alive = {name: line.processes[name].poll() is None for name in SERVICES}
        await asyncio.sleep(2.0)  # the last rows and acks
        soak.received = report.results
    finally:
        stop.set()
        await sampler


def soak_run(
    workdir: Path,
    *,
    duration_s: float,
    rate_hz: float,
    sessions: int,
    sample_s: float = 5.0,
    database_url: str | None = None,
    config_overrides: dict[str, Any] | None = None,
) -> Soak:
    line = LocalLine(workdir=workdir, database_url=database_url, config_overrides=config_overrides or {})
    soak = Soak(duration_s=duration_s, rate_hz=rate_hz, sessions=sessions)
    line.start()
    try:
        asyncio.run(drive(line, soak, sample_s=sample_s))
    finally:
        soak.codes = line.stop(timeout_s=30)
    rows = read_plc_rows(database_url or f"sqlite:///{line.database_path}")
    check = check_plc_columns(rows, soak.received)
    soak.rows, soak.plc_columns, soak.plc_columns_ok = len(rows), check.line, check.ok
    return soak
