"""The chaos harness at full scale (issue 13): N numbered parts through the line while every process is killed.

lineguard.testing.chaos does the work (what is played and what is checked is in its docstring and docs/faults.md);
tests/chaos/ runs it at CI's scale (300 parts). Here the faults are played `--cycles` times over the run (each
service SIGKILLed and SIGTERMed, results and inference frozen, PostgreSQL's connections cut and the database away,
the nats-server SIGKILLed, once per cycle). The baseline is the same line with no fault in the same invocation
(`--baseline-parts`, 0 for none): the chaos run's p99 trigger-to-result latency over the clean run's. Prints one line
per run and, last, all of it as one JSON object.

    python benchmarks/chaos.py [--parts 10000] [--rate 5] [--cycles 10] [--baseline-parts 1000] [--sqlite]
    python benchmarks/chaos.py --parts 150 --faults term:decision@12,term:gateway@14.4 --repeat 5 --baseline-parts 0

`--faults` plays those faults instead of every one (`<what>@<seconds>` at that time from the first trigger, else
spread over the run), `--repeat` that many chaos runs (to catch an interleaving that shows once in a while).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from lineguard.testing.chaos import EVERY_FAULT, chaos_run
from lineguard.testing.postgres import OwnCluster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--cycles", type=int, help="how many times every fault is played (default 10; 1 with --faults)")
    parser.add_argument("--hold-s", type=float, default=4.0, help="how long a frozen service / the database stays away")
    parser.add_argument("--baseline-parts", type=int, default=1000, help="parts of the run without faults (0: none)")
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of a PostgreSQL cluster of the run's own")
    parser.add_argument("--faults", help="comma-separated faults (kill:<service>, term:..., nats, ...[@seconds])")
    parser.add_argument("--repeat", type=int, default=1, help="how many chaos runs")
    parser.add_argument(
        "--stream-mib",
        type=int,
        help="each stream's size limit (nats.stream_max_bytes; the default 2 GiB a stream is more than a small disk "
        "lets JetStream reserve for a line's streams)",
    )
    args = parser.parse_args()
    runs = []
    faults = args.faults.split(",") if args.faults else list(EVERY_FAULT)
    cycles = args.cycles if args.cycles is not None else 1 if args.faults else 10
    plan = [("chaos", args.parts, faults * cycles)] * args.repeat
    if args.baseline_parts:
        plan.insert(0, ("clean", args.baseline_parts, []))
    for name, parts, faults in plan:
        print(f"run {name}: {parts} parts at {args.rate:g}/s, {len(faults)} faults ...", file=sys.stderr, flush=True)
        with ExitStack() as stack:
            # PostgreSQL of the run's own (initdb in a temporary folder): the pg-kill fault SIGKILLs it.
            cluster = None if args.sqlite else stack.enter_context(OwnCluster())
            workdir = Path(tempfile.mkdtemp(prefix=f"lineguard-chaos-{name}-")) / "line"
            overrides = {"nats": {"stream_max_bytes": args.stream_mib * 1024 * 1024}} if args.stream_mib else {}
            verdict = chaos_run(
                workdir,
                parts=parts,
                rate_hz=args.rate,
                faults=faults,
                cluster=cluster,
                hold_s=args.hold_s,
                config_overrides=overrides,
            )
        figures = {"run": name, "ok": verdict.ok, "violations": verdict.violations, **verdict.figures}
        runs.append(figures)
        outcome = "ok" if verdict.ok else "NOT OK: " + "; ".join(verdict.violations.values())
        print(
            f"  {figures['accepted']} accepted, {figures['results_at_plc']} results at the PLC, "
            f"{figures['rows']} rows, "
            f"escapes {figures['escapes']}, duplicates {figures['duplicates']}, lost with a killed gateway "
            f"{figures['lost_with_killed_gateway']}, PLC columns {figures['plc_columns_agree']}, p99 "
            f"{figures['latency_p99_ms']} ms, PLC sessions lost {figures['plc_reconnects']}, {outcome}",
            file=sys.stderr,
            flush=True,
        )
        if not verdict.ok:  # what was played, and when, beside what broke
            print("\n".join(f"    {line}" for line in figures["faults"]), file=sys.stderr, flush=True)
    clean = next((r for r in runs if r["run"] == "clean"), None)
    for run in runs:
        if run["run"] == "chaos" and clean and clean["latency_p99_ms"]:
            run["p99_vs_clean"] = round(run["latency_p99_ms"] / clean["latency_p99_ms"], 2)
    print(json.dumps({"benchmark": "chaos", "ok": all(r["ok"] for r in runs), "runs": runs}), flush=True)


if __name__ == "__main__":
    main()
