"""A frame's image cost, written once by capture and decoded by inference and OCR: the simulator's PNG
(lineguard.imaging.FAST_PNG: zlib level 1, no row filter) against OpenCV's default PNG, on the same boards, in
the same run.

Each round, on each of the simulator's stamped boards (640 x 800 grey, what the demo line's frames carry), in
alternating order: the encode, and the two consumers' decodes (grey, as both read it), in CPU ms (process time);
the encoded bytes. Prints one JSON line per round, then the medians and ranges over the rounds with the ratio
fast / default of the per-frame cost (encode + 2 decodes); the last line is JSON.

    python benchmarks/frame_encoding.py [--rounds 5] [--repeat 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import cv2
import numpy as np

from lineguard.imaging import FAST_PNG, encode_image
from lineguard.services.capture.sources.simulator import Settings, SimulatorSource
from lineguard.testing.rounds import medians_and_ranges
from lineguard.v1.common_pb2 import Part

CONSUMERS = 2  # inference and OCR each decode the frame's image
SIDES: dict[str, tuple[int, ...]] = {"default": (), "fast": FAST_PNG}


def boards() -> list[np.ndarray]:
    """The simulator's frames as the line sends them: each board (or its repaired good part) with its serial strip."""
    source = SimulatorSource("s1", Settings(px_per_mm=48.0))
    count = len(source.playlist.paths)
    images = [source.grab(Part(sequence=n + 1)) for n in range(count)]
    return [image.pixels for image in images if image.pixels is not None]


def cpu_ms(work: Callable[[], object], repeat: int) -> float:
    """Median CPU ms of one call of `work`."""
    samples = []
    for _ in range(repeat):
        started = time.process_time()
        work()
        samples.append((time.process_time() - started) * 1000)
    return statistics.median(samples)


def measure(pixels: list[np.ndarray], params: tuple[int, ...], repeat: int) -> dict[str, float]:
    encode, decode, size = [], [], []
    for board in pixels:
        data = encode_image(board, "png", params)
        buffer = np.frombuffer(data, np.uint8)
        decoded = cv2.imdecode(buffer, cv2.IMREAD_GRAYSCALE)
        if not np.array_equal(decoded, board):
            raise AssertionError("the PNG did not decode to the pixels written: not lossless")
        encode.append(cpu_ms(lambda b=board: encode_image(b, "png", params), repeat))
        decode.append(cpu_ms(lambda d=buffer: cv2.imdecode(d, cv2.IMREAD_GRAYSCALE), repeat))
        size.append(len(data))
    enc, dec = statistics.median(encode), statistics.median(decode)
    return {
        "encode_ms": round(enc, 3),
        "decode_ms": round(dec, 3),
        "frame_ms": round(enc + CONSUMERS * dec, 3),
        "kib": round(statistics.median(size) / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=20, help="calls per board per figure (their median)")
    args = parser.parse_args()
    pixels = boards()
    rows = []
    for number in range(args.rounds):
        order = list(SIDES) if number % 2 == 0 else list(reversed(SIDES))
        figures = {side: measure(pixels, SIDES[side], args.repeat) for side in order}
        row = {f"{side}_{key}": value for side in SIDES for key, value in figures[side].items()}
        row["ratio_frame_ms"] = round(figures["fast"]["frame_ms"] / figures["default"]["frame_ms"], 3)
        rows.append(row)
        print(json.dumps({"round": number + 1, **row}), flush=True)
    print(json.dumps({"summary": medians_and_ranges(rows), "boards": len(pixels), "rounds": len(rows)}), flush=True)


if __name__ == "__main__":
    main()
