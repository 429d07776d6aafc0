"""The line at the model's speed: the whole line's sustained rate and its overload behaviour against the bare model,
measured in the same run, in interleaved rounds.

Each round, on one line (lineguard demo's: six processes, secured nats-server, SQLite, the shipped model, a
simulated OPC UA PLC):
  bare       the shipped model alone (onnxruntime session.run in a loop on a prepared board, the line's threads),
             images/s and this process's CPU ms per image; before and after the line's runs, their mean the baseline;
  sustain    parts triggered at --ratio x the bare rate for --seconds: judged share (no TIMEOUT, no OVERLOAD),
             the rate / bare when every part was judged, else judged parts/s / bare (the target: >= 0.85
             with every part judged);
  overload   parts at 2 x the sustain rate: judged parts/s / the sustain run's (target >= 0.8; both in their steady
             state, lineguard.bench.line.steady_window), how many failed with
             OVERLOAD and how fast (trigger to PLC result), TIMEOUTs (target 0), a PASS among them (must be 0), and
             every part's PLC result and row;
  cpu        each process's CPU ms per part in the sustain run (psutil), and the total minus the bare model's CPU per
             image for each part the model ran (the judged ones): the line's CPU per part outside the model
             (target <= 10 ms).

Prints one JSON line per round, then one summary JSON line (medians and ranges, lineguard.testing.rounds).

    python benchmarks/line.py [--rounds 3] [--seconds 12] [--ratio 0.85] [--threads 0] [--overload 2]
    python benchmarks/line.py --cpu-at 4 [--rounds 3] [--seconds 12]

`--cpu-at RATE` is the cpu figure alone, for working on one service's cost: each round the bare model, then parts
at RATE a second (no overload run), each process's CPU ms per part and the total outside the model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from pathlib import Path

from lineguard.bench.line import LineRun, connected_plc, drive, settle, start_line
from lineguard.bench.model import Runtime, bare_run
from lineguard.testing.rounds import medians_and_ranges
from lineguard.vision.model import packaged_model_path


def cpu_row(run: LineRun, model_cpu_ms: float, load: float) -> dict[str, float]:
    """The run's CPU per part: the line's, outside the model (the bare model's CPU per image taken off for each
    part the model ran: the judged ones, a refused frame is not run), and each process's."""
    return {
        "cpu_ms_per_part_line": round(run.cpu_ms_total, 1),
        "cpu_ms_per_part_outside_model": round(run.cpu_ms_total - model_cpu_ms * run.judged / run.parts, 1),
        **{f"cpu_ms_per_part_{name}": ms for name, ms in sorted(run.cpu_ms_per_part.items())},
        "load_1m": round(load, 2),
    }


async def rounds(args: argparse.Namespace, workdir: Path) -> None:
    runtime = Runtime(threads=args.threads)
    model = packaged_model_path()
    line = await asyncio.to_thread(start_line, workdir, {"model": {"intra_op_threads": args.threads}})
    figures = []
    try:
        plc = await connected_plc(line)
        try:
            await drive(line, plc, 2.0, 10)  # warm up: the first parts load what each service loads lazily
            for number in range(1, args.rounds + 1):
                load = os.getloadavg()[0]
                before = await asyncio.to_thread(bare_run, model, runtime, args.images)
                bare = before.images_per_s
                if args.cpu_at:
                    run = await drive(line, plc, args.cpu_at, round(args.cpu_at * args.seconds))
                    await settle()
                    row = cpu_row(run, before.cpu_ms_per_image, load)
                    figures.append(row)
                    print(json.dumps({"round": number, **row}), flush=True)
                    continue
                sustain = await drive(line, plc, args.ratio * bare, round(args.ratio * bare * args.seconds))
                await settle()
                over_rate = args.overload * sustain.rate
                overload = await drive(line, plc, over_rate, round(over_rate * args.seconds))
                await settle()
                after = await asyncio.to_thread(bare_run, model, runtime, args.images)
                bare = (before.images_per_s + after.images_per_s) / 2
                model_cpu = (before.cpu_ms_per_image + after.cpu_ms_per_image) / 2
                row = {
                    "bare_images_per_s": round(bare, 2),
                    "bare_p50_ms": round((before.p50_ms + after.p50_ms) / 2, 1),
                    "bare_cpu_ms_per_image": round(model_cpu, 1),
                    "sustain_rate": sustain.rate,
                    "sustain_judged_share": round(sustain.judged / sustain.parts, 4),
                    # Sustained: the rate it held; else what it judged per second (its latency tail counted in).
                    "sustain_ratio": round((sustain.rate if sustain.sustained else sustain.judged_per_s) / bare, 4),
                    "sustain_p50_ms": sustain.judged_p50_ms,
                    "sustain_p99_ms": sustain.judged_p99_ms,
                    "overload_rate": round(over_rate, 2),
                    # Against what the line judged a second without overload: the sustain rate when it held it.
                    "overload_judged_ratio": round(overload.judged_per_s / max(sustain.judged_per_s, 1e-6), 4),
                    "overload_failed_fast": overload.overload,
                    "overload_timeouts": overload.timeout,
                    "overload_unjudged_pass": overload.unjudged_pass,
                    "overload_rows_ok": float(overload.rows == overload.parts and not overload.missing),
                    "overload_fail_p50_ms": overload.overload_p50_ms,
                    "overload_fail_p99_ms": overload.overload_p99_ms,
                    **cpu_row(sustain, model_cpu, load),
                }
                figures.append(row)
                detail = {"sustain": sustain.as_dict(), "overload": overload.as_dict()}
                print(json.dumps({"round": number, **row, **detail}), flush=True)
        finally:
            await plc.__aexit__(None, None, None)
    finally:
        codes = await asyncio.to_thread(line.stop)
    # nan (no part of that kind in a round) is not JSON: the median of the rounds that had one.
    numeric = [{k: v for k, v in r.items() if v == v} for r in figures]
    keys = set.intersection(*(set(r) for r in numeric))
    summary = medians_and_ranges([{k: r[k] for k in sorted(keys)} for r in numeric])
    targets = {
        "sustain_ratio": ">= 0.85",
        "overload_judged_ratio": ">= 0.8",
        "overload_timeouts": "0",
        "cpu_ms_per_part_outside_model": "<= 10",
    }
    print(json.dumps({"summary": summary, "targets": targets, "rounds": len(figures), "clean_stop": codes}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=12.0, help="how long each run triggers parts")
    parser.add_argument("--ratio", type=float, default=0.85, help="the sustain run's rate, a share of the bare rate")
    parser.add_argument("--overload", type=float, default=2.0, help="the overload run's rate, times the sustain rate")
    parser.add_argument("--images", type=int, default=60, help="images per bare run")
    parser.add_argument("--threads", type=int, default=0, help="the model's CPU threads, both sides (0: default)")
    parser.add_argument("--cpu-at", type=float, default=0.0, help="only the CPU per part, at this rate (parts/s)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the line runs (default: a new folder)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lineguard-bench-")) / "line"
    asyncio.run(rounds(args, workdir))


if __name__ == "__main__":
    main()
