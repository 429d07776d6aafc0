"""What measuring each frame's image quality costs capture, against capture without it, in the same run.

  capture   StationCameras.capture of the demo line's simulator (a 640 x 800 board with its serial strip, encoded
            as PNG): what capture does per trigger, image quality included (lineguard.imagequality);
  raw       the same grabs with the quality step left out, the baseline;
  5mp       `measure` alone on a 2448 x 2048 mono frame (a 5 MP GigE camera's), the cost where frames are big.
Per frame by the wall clock, --frames frames a side per round, the two sides alternating which goes first in each
of --rounds rounds; then each side's p50, the quality step's p50 share of the capture time, the ratio, and the
medians and ranges over the rounds as one JSON line (the last line).

    python benchmarks/image_quality.py [--frames 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from lineguard.config import LineConfig
from lineguard.imagequality import measure
from lineguard.services.capture.frames import StationCameras
from lineguard.sim.lineconfig import demo_config_dict
from lineguard.testing.records import triggered_part
from lineguard.testing.rounds import medians_and_ranges
from lineguard.v1.trigger_pb2 import Trigger


class WithoutQuality(StationCameras):
    def _quality(self, image, recipe_id):  # type: ignore[no-untyped-def]
        return None


def timed(fn, frames: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for i in range(frames):
        start = time.perf_counter_ns()
        fn(i)
        out.append((time.perf_counter_ns() - start) / 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    config = LineConfig(
        **demo_config_dict(nats_url="nats://127.0.0.1:1", database_url="sqlite://", opcua_endpoint="opc.tcp://x:1/")
    )
    measured, raw = StationCameras.from_config(config), WithoutQuality.from_config(config)
    big = np.random.default_rng(1).integers(0, 256, (2048, 2448), dtype=np.uint8)
    sides = {
        "capture": lambda i: measured.capture(Trigger(part=triggered_part(i + 1))),
        "raw": lambda i: raw.capture(Trigger(part=triggered_part(i + 1))),
        "5mp": lambda i: measure(big),
    }
    rounds = []
    for r in range(args.rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        p50 = {name: statistics.median(timed(sides[name], args.frames)) for name in order}
        rounds.append(
            {
                "capture_p50_ms": p50["capture"],
                "raw_p50_ms": p50["raw"],
                "quality_p50_ms": p50["capture"] - p50["raw"],
                "ratio": p50["capture"] / p50["raw"],
                "measure_5mp_p50_ms": p50["5mp"],
            }
        )
        print(f"round {r + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in rounds[-1].items()))
    print(json.dumps(medians_and_ranges(rounds)))


if __name__ == "__main__":
    main()
