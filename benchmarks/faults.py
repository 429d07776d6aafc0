"""The whole line under faults: do the records and the PLC's results tell the truth? (issue 9's "Done when")

Each run starts the line as `lineguard demo` does (six service processes, an embedded nats-server, SQLite or a
throwaway PostgreSQL database), lets the simulated PLC trigger --parts parts at --rate over OPC UA, and meanwhile,
in a "faults" run, takes the database away for --pg-outage-s (ALTER DATABASE ... ALLOW_CONNECTIONS false and
pg_terminate_backend on the throwaway database only, never the server) and then stops the nats-server for
--nats-outage-s before starting it again on the same port and store. After the run the line is stopped (the
results service last) and every MES row is checked against what the PLC received.

Per run it reports: results at the PLC (missing, duplicated), FAIL/TIMEOUTs and the latest of them against the
bound deadline_ms + result_grace_ms + 100 ms, how long Trigger took to answer (p50, p99, max), the PLC's session
losses, rows, rows the PLC got a result for whose PLC columns are not filled, and "PLC columns: N of N agree". The
baseline is the same line without faults in the same invocation: the faults run's p99 trigger-to-result latency of
parts that were not timed out, over the clean run's. The last line is all of it as one JSON object.

    python benchmarks/faults.py [--parts 600] [--rate 5] [--runs sqlite,postgres,postgres-faults]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from lineguard.localline import LocalLine
from lineguard.sim.plc import PlcResult, PlcRunReport, SimulatedPlc, percentile
from lineguard.sim.plc_columns import check_plc_columns, read_plc_rows
from lineguard.testing.postgres import give_database_back, take_database_away, throwaway_database

DEADLINE_MS = 3000
GRACE_MS = 500  # gateway.result_grace_ms, the default


class TimedPlc(SimulatedPlc):
    """The simulated PLC, timing each Trigger call until it answered."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.answers_s: list[float] = []

    async def trigger(self, sequence: int, part_id: str = "") -> str:
        called = time.perf_counter()
        try:
            return await super().trigger(sequence, part_id)
        finally:
            self.answers_s.append(time.perf_counter() - called)


def first_results(plc: SimulatedPlc) -> dict[str, PlcResult]:
    first: dict[str, PlcResult] = {}
    for result in plc.received:
        first.setdefault(result.inspection_id, result)
    return first


async def faults(line: LocalLine, db_url: str | None, args: argparse.Namespace, log: list[str]) -> None:
    """The schedule, from the first trigger: the database away, then the bus away, one after the other."""
    start = time.monotonic()

    async def at(offset_s: float) -> None:
        await asyncio.sleep(max(0.0, start + offset_s - time.monotonic()))

    def note(what: str) -> None:
        log.append(f"{time.monotonic() - start:6.1f} s {what}")

    if db_url is not None and args.pg_outage_s > 0:
        await at(args.pg_outage_at_s)
        await asyncio.to_thread(take_database_away, db_url)
        note(f"PostgreSQL database refuses connections for {args.pg_outage_s:g} s")
        await at(args.pg_outage_at_s + args.pg_outage_s)
        await asyncio.to_thread(give_database_back, db_url)
        note("PostgreSQL database back")
    if args.nats_outage_s > 0:
        assert line.nats is not None
        await at(args.nats_outage_at_s)
        await asyncio.to_thread(line.nats.stop)
        note(f"nats-server stopped for {args.nats_outage_s:g} s")
        await at(args.nats_outage_at_s + args.nats_outage_s)
        await asyncio.to_thread(line.nats.start)
        note("nats-server started again")


def wait_for_rows(url: str, expected: int, timeout_s: float) -> int:
    engine = sa.create_engine(url)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            with engine.connect() as conn:
                count = conn.execute(
                    sa.text("SELECT COUNT(*) FROM inspections WHERE plc_verdict IS NOT NULL")
                ).scalar_one()
            if count >= expected or time.monotonic() > deadline:
                return int(count)
            time.sleep(0.5)
    finally:
        engine.dispose()


def run_once(name: str, args: argparse.Namespace) -> dict[str, Any]:
    with ExitStack() as stack:
        pg_url = stack.enter_context(throwaway_database()) if name.startswith("postgres") else None
        workdir = Path(tempfile.mkdtemp(prefix=f"lineguard-faults-{name}-"))
        profiles = None if args.profiles == "default" else args.profiles.split(",")
        line = LocalLine(workdir=workdir, database_url=pg_url, deadline_ms=DEADLINE_MS, plc_profiles=profiles)
        db_url = pg_url or f"sqlite:///{line.database_path}"
        line.start()
        schedule: list[str] = []
        try:

            async def drive() -> tuple[PlcRunReport | None, TimedPlc, str]:
                plc = TimedPlc(line.opcua_endpoint, station="s1")
                async with plc:
                    fault_task = (
                        asyncio.create_task(faults(line, pg_url, args, schedule)) if name.endswith("faults") else None
                    )
                    try:
                        report = await plc.run(args.parts, args.rate, result_timeout_s=120.0)
                    except Exception as exc:  # noqa: BLE001 - the PLC lost its session: reported, not a crash
                        return None, plc, repr(exc)
                    finally:
                        if fault_task is not None:
                            await fault_task
                    return report, plc, ""

            started = time.monotonic()
            report, plc, error = asyncio.run(drive())
            elapsed = time.monotonic() - started
            wait_for_rows(db_url, args.parts, timeout_s=120)
        finally:
            codes = line.stop()
        rows = read_plc_rows(db_url)
    # The first result of each inspection it triggered (all of them when the run was cut short by a lost session).
    received: list[PlcResult] = report.results if report is not None else list(first_results(plc))
    missing = len(report.missing) if report is not None else args.parts - len(received)
    duplicates = len(report.duplicates) if report is not None else 0
    check = check_plc_columns(rows, received)
    by_id = {r.inspection_id: r for r in rows}
    unfilled = [
        r.sequence
        for r in received
        if (row := by_id.get(r.inspection_id)) is None or row.plc_delivered_at is None or row.plc_verdict != r.verdict
    ]
    bound_s = (DEADLINE_MS + GRACE_MS + 100) / 1000
    timeouts = [r for r in received if "TIMEOUT" in r.reasons]
    late = [r.sequence for r in timeouts if r.latency_s > bound_s]
    judged = [r.latency_s for r in received if "TIMEOUT" not in r.reasons]
    answers = plc.answers_s
    return {
        "run": name,
        "parts": args.parts,
        "rate_hz": args.rate,
        "elapsed_s": round(elapsed, 1),
        "faults": schedule,
        "results_at_plc": len(received),
        "missing": missing,
        "duplicates": duplicates,
        "error": error,
        "plc_profiles": args.profiles,
        "verdicts": {v: sum(1 for r in received if r.verdict == v) for v in ("PASS", "FAIL", "REWORK", "ERROR")},
        "fail_timeouts": len(timeouts),
        "fail_timeout_max_s": round(max((r.latency_s for r in timeouts), default=math.nan), 3),
        "fail_timeout_bound_s": bound_s,
        "fail_timeouts_late": late,
        "latency_p50_ms": round(percentile(judged, 50) * 1000, 1),
        "latency_p99_ms": round(percentile(judged, 99) * 1000, 1),
        "trigger_answer_p50_ms": round(percentile(answers, 50) * 1000, 2),
        "trigger_answer_p99_ms": round(percentile(answers, 99) * 1000, 2),
        "trigger_answer_max_ms": round(max(answers, default=math.nan) * 1000, 2),
        "plc_session_losses": len(plc.connection_losses),
        "rows": len(rows),
        "plc_results_without_filled_columns": unfilled,
        "plc_columns_agree": check.agree,
        "plc_columns_rows": check.rows,
        "plc_columns_disagree": check.disagreements[:20],
        "clean_shutdown": all(code == 0 for code in codes.values()),
    }


def verdict(run: dict[str, Any]) -> bool:
    return (
        not run["error"]
        and run["missing"] == 0
        and run["duplicates"] == 0
        and not run["fail_timeouts_late"]
        and run["plc_session_losses"] == 0
        and not run["plc_results_without_filled_columns"]
        and run["plc_columns_agree"] == run["plc_columns_rows"] == run["parts"]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=int, default=600)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--runs", default="sqlite,postgres,postgres-faults")
    parser.add_argument("--pg-outage-at-s", type=float, default=30.0)
    parser.add_argument("--pg-outage-s", type=float, default=15.0)
    parser.add_argument("--nats-outage-at-s", type=float, default=60.0)
    parser.add_argument("--nats-outage-s", type=float, default=10.0)
    parser.add_argument(
        "--profiles",
        default="default",
        help="the OPC UA profiles the station serves, comma separated, or 'default' (the demo's: simple and "
        "machine-vision)",
    )
    args = parser.parse_args()
    runs = []
    for name in args.runs.split(","):
        print(f"run {name}: {args.parts} parts at {args.rate:g}/s ...", file=sys.stderr, flush=True)
        run = run_once(name, args)
        run["ok"] = verdict(run)
        runs.append(run)
        print(
            f"  {run['results_at_plc']} results at the PLC (missing {run['missing']}, duplicated {run['duplicates']}), "
            f"{run['fail_timeouts']} FAIL/TIMEOUT (latest {run['fail_timeout_max_s']} s, bound "
            f"{run['fail_timeout_bound_s']} s, late {len(run['fail_timeouts_late'])}), Trigger answered p99 "
            f"{run['trigger_answer_p99_ms']} ms max {run['trigger_answer_max_ms']} ms, session losses "
            f"{run['plc_session_losses']}, PLC columns: {run['plc_columns_agree']} of {run['plc_columns_rows']} agree, "
            f"{'ok' if run['ok'] else 'NOT OK'}",
            file=sys.stderr,
            flush=True,
        )
        for line in run["faults"]:
            print(f"    {line}", file=sys.stderr)
    clean = {r["run"]: r for r in runs if not r["run"].endswith("faults")}
    for run in runs:
        base = clean.get(run["run"].removesuffix("-faults"))
        if run["run"].endswith("faults") and base and base["latency_p99_ms"]:
            run["p99_vs_clean"] = round(run["latency_p99_ms"] / base["latency_p99_ms"], 2)
    print(json.dumps({"benchmark": "faults", "ok": all(r["ok"] for r in runs), "runs": runs}), flush=True)


if __name__ == "__main__":
    main()
