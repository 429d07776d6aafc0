"""The soak (issue 13): the line at a steady rate for an hour while 1000 OPC UA sessions open and close against the
gateway's server; each process's memory, file descriptors and threads sampled (lineguard.testing.soak).

The baseline is each process's own first quarter (after `--warmup-s`): its last quarter's median over it (ratio)
and the difference; the invariants (every part one result and one row, PLC columns agreeing, every session opened
and closed, every service alive) are checked as in the end-to-end test. Prints one JSON object.

    python benchmarks/soak.py [--duration-s 3600] [--rate 2] [--sessions 1000] [--sample-s 10] [--postgres]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from lineguard.testing.postgres import throwaway_database
from lineguard.testing.soak import soak_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=3600.0)
    parser.add_argument("--rate", type=float, default=2.0, help="parts per second (the line's sustainable rate)")
    parser.add_argument("--sessions", type=int, default=1000, help="OPC UA sessions opened and closed over the run")
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=60.0, help="left out of the growth figures")
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL database instead of SQLite")
    parser.add_argument("--stream-mib", type=int, help="each stream's size limit (nats.stream_max_bytes)")
    args = parser.parse_args()
    overrides = {"nats": {"stream_max_bytes": args.stream_mib * 1024 * 1024}} if args.stream_mib else {}
    with ExitStack() as stack:
        url = stack.enter_context(throwaway_database()) if args.postgres else None
        soak = soak_run(
            Path(tempfile.mkdtemp(prefix="lineguard-soak-")) / "line",
            duration_s=args.duration_s,
            rate_hz=args.rate,
            sessions=args.sessions,
            sample_s=args.sample_s,
            database_url=url,
            config_overrides=overrides,
        )
    figures = soak.figures(args.warmup_s)
    ok = (
        not soak.missing
        and not soak.duplicates
        and soak.plc_columns_ok
        and soak.sessions_closed == soak.sessions
        and all(soak.alive.values())
    )
    for name, metrics in figures["growth"].items():
        line = ", ".join(f"{m} {v['first']} -> {v['last']} (x{v['ratio']}, max {v['max']})" for m, v in metrics.items())
        print(f"  {name:12} {line}; RSS by tenth {metrics['rss_mib']['tenths']}", file=sys.stderr)
    print(json.dumps({"benchmark": "soak", "ok": ok, **figures}), flush=True)


if __name__ == "__main__":
    main()
