"""The whole line against the bare model on this box: the line (six processes and nats-server, lineguard.localline)
driven by a simulated OPC UA PLC at a rate, each part's result at the PLC and its row in the database counted, and
each process's CPU time read from the kernel (/proc/<pid>/stat) over the run.

A part is *judged* when the model and the rules gave its verdict (none of its reasons says it was not judged:
TIMEOUT, OVERLOAD, NO_INFERENCE, NO_OCR). A rate is *sustained* when every part is judged. Under overload the
parts the line cannot judge in time must fail at once with OVERLOAD (never a pass, never a TIMEOUT at the deadline),
each with its PLC result and its row."""

from __future__ import annotations

import asyncio
import math
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lineguard.localline import LocalLine
from lineguard.sim.plc import PlcResult, SimulatedPlc, percentile

OVERLOAD, TIMEOUT = "OVERLOAD", "TIMEOUT"
NOT_JUDGED = frozenset({TIMEOUT, OVERLOAD, "NO_INFERENCE", "NO_OCR"})
NATS = "nats-server"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class LineRun:
    """One drive of the line: `parts` triggered at `rate` per second."""

    rate: float
    parts: int
    results: int = 0  # first results at the PLC
    judged: int = 0
    overload: int = 0
    timeout: int = 0
    timeout_no_inference: int = 0  # of the TIMEOUTs, those without the model's result (else OCR's was missing)
    unjudged_pass: int = 0  # a PASS for a part that was not judged: must be 0
    missing: int = 0
    duplicates: int = 0
    rows: int = 0  # database rows of these parts whose verdict is the one the PLC got
    judged_per_s: float = 0.0  # judged results a second in the run's steady state (steady_window)
    judged_p50_ms: float = math.nan
    judged_p99_ms: float = math.nan
    overload_p50_ms: float = math.nan  # trigger to OVERLOAD result
    overload_p99_ms: float = math.nan
    cpu_ms_per_part: dict[str, float] = field(default_factory=dict)  # per process, over all parts triggered

    @property
    def sustained(self) -> bool:
        return self.judged == self.parts and self.rows == self.parts and not self.duplicates

    @property
    def cpu_ms_total(self) -> float:
        return sum(self.cpu_ms_per_part.values())

    def as_dict(self) -> dict[str, Any]:
        """Its figures, JSON-ready: a latency of no part of its kind is None (JSON has no NaN)."""
        figures = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(self).items()}
        return {**figures, "sustained": self.sustained, "cpu_ms_total": round(self.cpu_ms_total, 1)}


class CpuClock:
    """CPU seconds (user + system, every thread) of each of the line's processes, as the kernel counts them."""

    def __init__(self, line: LocalLine):
        self.pids = {name: p.pid for name, p in line.processes.items()}
        if line.nats is not None and line.nats.process is not None:
            self.pids[NATS] = line.nats.process.pid

    def read(self) -> dict[str, float]:
        return {name: process_cpu_s(pid) for name, pid in self.pids.items()}


def process_cpu_s(pid: int) -> float:
    """utime + stime of `pid` from /proc/<pid>/stat (Linux), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the command name, which is in parentheses and may hold spaces: utime and stime are 14 and 15.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rows_agreeing(database: Path, results: list[PlcResult], timeout_s: float = 30.0) -> int:
    """How many of `results` have their row with the verdict the PLC got (waiting for the writer to catch up)."""
    wanted = {r.inspection_id: r.verdict for r in results}
    deadline = time.monotonic() + timeout_s
    agree = 0
    while True:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
            found: dict[str, str] = {}
            ids = list(wanted)
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                found.update(
                    db.execute(
                        f"SELECT inspection_id, verdict FROM inspections WHERE inspection_id IN ({marks})", chunk
                    )
                )
        agree = sum(1 for i, v in wanted.items() if found.get(i) == v)
        if len(found) >= len(wanted) or time.monotonic() > deadline:
            return agree
        time.sleep(0.2)


async def drive(line: LocalLine, plc: SimulatedPlc, rate: float, parts: int, result_timeout_s: float = 30.0) -> LineRun:
    """Trigger `parts` at `rate`, wait for their results and rows; the run's figures."""
    clock = CpuClock(line)
    arrived: dict[str, float] = {}

    def on_result(result: PlcResult) -> None:
        arrived[result.inspection_id] = time.perf_counter()

    before = clock.read()
    started = time.perf_counter()
    report = await plc.run(parts, rate, on_result=on_result, result_timeout_s=result_timeout_s)
    assert line.database_path is not None
    rows = await asyncio.to_thread(rows_agreeing, line.database_path, report.results)
    after = clock.read()
    run = LineRun(rate=round(rate, 2), parts=parts, results=len(report.results), rows=rows)
    run.missing, run.duplicates = len(report.missing), len(report.duplicates)
    judged = [r for r in report.results if not NOT_JUDGED & set(r.reasons)]
    overloaded = [r for r in report.results if OVERLOAD in r.reasons]
    run.judged, run.overload = len(judged), len(overloaded)
    run.timeout = sum(1 for r in report.results if TIMEOUT in r.reasons)
    run.timeout_no_inference = sum(1 for r in report.results if TIMEOUT in r.reasons and "NO_INFERENCE" in r.reasons)
    run.unjudged_pass = sum(1 for r in report.results if r.verdict == "PASS" and NOT_JUDGED & set(r.reasons))
    if judged:
        begin, end = steady_window(started, parts / rate)
        steady = sum(1 for r in judged if begin <= arrived.get(r.inspection_id, math.inf) <= end)
        run.judged_per_s = round(steady / (end - begin), 2)
        run.judged_p50_ms, run.judged_p99_ms = (
            round(percentile([r.latency_s * 1000 for r in judged], q), 1) for q in (50, 99)
        )
    if overloaded:
        run.overload_p50_ms, run.overload_p99_ms = (
            round(percentile([r.latency_s * 1000 for r in overloaded], q), 1) for q in (50, 99)
        )
    run.cpu_ms_per_part = {name: round((after[name] - before[name]) * 1000 / parts, 1) for name in after}
    return run


def steady_window(started: float, triggering_s: float) -> tuple[float, float]:
    """The part of a run whose results count towards its rate: from a third of the triggering (at most 3 s: the
    line's queues filled) to the last trigger (before the backlog left at the end drains, which would count a
    deadline's worth of results no second of triggering made)."""
    skip = min(3.0, triggering_s / 3)
    return started + skip, started + triggering_s


# Each stream's size limit for a benchmark's line: a run stores a few hundred MB at most, and JetStream reserves
# every stream's limit on the disk up front (13 streams at the default 2 GiB are refused by a box with less than
# about 35 GB free). The limit does not change what a message costs.
BENCH_STREAM_MAX_BYTES = 256 * 1024 * 1024


def start_line(workdir: Path, config_overrides: dict[str, Any] | None = None) -> LocalLine:
    """The demo's line (secured NATS, SQLite, the shipped model, the simple OPC UA profile) in `workdir`."""
    overrides = {"nats": {"stream_max_bytes": BENCH_STREAM_MAX_BYTES}, **(config_overrides or {})}
    return LocalLine(workdir=workdir, config_overrides=overrides).start()


async def connected_plc(line: LocalLine) -> SimulatedPlc:
    plc = SimulatedPlc(line.opcua_endpoint, station="s1")
    await plc.__aenter__()
    return plc


async def settle(seconds: float = 1.0) -> None:
    """Between runs: what is still in flight (a late OCR, the last acks) done before the next one counts CPU."""
    await asyncio.sleep(seconds)


async def find_sustainable(
    line: LocalLine,
    plc: SimulatedPlc,
    ceiling: float,
    seconds: float,
    steps: int = 4,
    say: Callable[[str], None] = lambda _: None,
) -> tuple[float, list[LineRun]]:
    """The highest rate the line sustains, by bisection between 0 and `ceiling` parts/s in `steps` runs of about
    `seconds` each (starting at 0.85 of the ceiling: the rate the line should hold); 0.0 when none was."""
    low, high, rate = 0.0, ceiling * 1.15, ceiling * 0.85
    runs = []
    for _ in range(steps):
        run = await drive(line, plc, rate, max(10, round(rate * seconds)))
        runs.append(run)
        say(
            f"  {rate:6.2f} parts/s: {run.judged} of {run.parts} judged, {run.overload} overload, "
            f"{run.timeout} timeout -> {'sustained' if run.sustained else 'not sustained'}"
        )
        if run.sustained:
            low = rate
        else:
            high = rate
        rate = (low + high) / 2
        await settle()
    return low, runs
