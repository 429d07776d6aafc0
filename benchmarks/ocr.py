"""The identity reads' time per part against bare library calls, in the same run.

Codes, on generated metal labels (`lineguard ocr make-labels`, defaults: glare, low contrast,
dot-peened DataMatrix) made in a temporary folder:
  ladder   lineguard.ocr.codes.read_ladder as the service calls it (DataMatrix + QR wanted, its
           budget, grades of what it read);
  bare     one zxingcpp.read_barcodes on the same grey image (what the service did before the ladder);
  no-sampler  the same ladder without its grid-sample step (lineguard.ocr.gridsample): what the
           sampler adds to the time per part, against what it adds to the reads;
  region / frame: the ladder on the 640 x 400 label against the same label placed in a 1920 x 1200
           frame and read whole (why a recipe gives code_roi).
Text, on generated paper labels:
  recognise  lineguard.ocr.text.read_text in the label's text box (recognition only);
  detect     detection + recognition over the lower half of the label (no text box).
Text, on the metal labels, the serial's field given (LG-NNNNNNN-C, digits-mod10) as a recipe's text field:
  recognise_metal  read_text in the text box with the field: the line found, levelled and cut tight
           (lineguard.ocr.textline), constrained decoding and the flattened image where the plain reading fails;
  rapidocr_metal   rapidocr's own recognition of the same box (use_det=False): the raw baseline.
Each side is timed per image (perf_counter), the sides alternating which goes first in each of
--rounds rounds; per round the p50 / p99 of each side and the ratios of the p50s, then the medians and
ranges over the rounds, and the same as one JSON line (the last line). Also each round's DataMatrix read
rate of ladder and bare: the time buys reads.

    python benchmarks/ocr.py [--images 60] [--text-images 12] [--rounds 5] [--budget-ms 40]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zxingcpp

from lineguard.imaging import ROI
from lineguard.ocr.codes import LADDER, formats_named, read_ladder
from lineguard.ocr.evaluate import TEXT_SERIAL, Sample, load_set, text_roi
from lineguard.ocr.labels import LabelSettings, write_set
from lineguard.ocr.text import rapidocr_recognise, read_text, warm_up
from lineguard.testing.rounds import medians_and_ranges

WANTED = ("DataMatrix", "QRCode")


def _timed(fn: Callable[[Sample], bool], samples: list[Sample]) -> tuple[list[float], int]:
    ms, hits = [], 0
    for sample in samples:
        started = time.perf_counter()
        hits += fn(sample)
        ms.append((time.perf_counter() - started) * 1000)
    return ms, hits


def _dm(sample: Sample) -> str:
    return next(c.text for c in sample.truth.codes if c.symbology == "DataMatrix")


def _in_frame(image: np.ndarray) -> np.ndarray:
    frame = np.full((1200, 1920), int(np.median(image)), np.uint8)
    frame[400 : 400 + image.shape[0], 640 : 640 + image.shape[1]] = image
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=60, help="metal labels for the code sides")
    parser.add_argument("--text-images", type=int, default=12, help="paper labels for the text sides")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget-ms", type=float, default=40.0)
    args = parser.parse_args()

    formats = formats_named(list(WANTED))
    with tempfile.TemporaryDirectory() as tmp:
        write_set(Path(tmp) / "metal", args.images, 2, LabelSettings(surface="metal"))
        write_set(Path(tmp) / "paper", args.text_images, 1, LabelSettings(surface="paper"))
        metal, paper = load_set(Path(tmp) / "metal"), load_set(Path(tmp) / "paper")
    frames = {id(s): _in_frame(s.image) for s in metal}
    warm_up()

    def ladder(s: Sample) -> bool:
        reading = read_ladder(s.image, formats=formats, wanted=WANTED, budget_ms=args.budget_ms)
        return any(c.text == _dm(s) for c in reading.codes)

    without = tuple(step for step in LADDER if step != "grid-sample")

    def no_sampler(s: Sample) -> bool:
        reading = read_ladder(s.image, formats=formats, wanted=WANTED, budget_ms=args.budget_ms, ladder=without)
        return any(c.text == _dm(s) for c in reading.codes)

    def bare(s: Sample) -> bool:
        return any(b.text == _dm(s) for b in zxingcpp.read_barcodes(s.image, formats=tuple(formats)))  # type: ignore[arg-type]

    def frame(s: Sample) -> bool:
        reading = read_ladder(frames[id(s)], formats=formats, wanted=WANTED, budget_ms=args.budget_ms)
        return any(c.text == _dm(s) for c in reading.codes)

    def recognise(s: Sample) -> bool:
        return [t.text for t in read_text(s.image, text_roi(s.truth, s.image.shape), detect=False)] == [s.truth.text]

    def recognise_metal(s: Sample) -> bool:
        roi = text_roi(s.truth, s.image.shape)
        return [t.text for t in read_text(s.image, roi, detect=False, rules=[TEXT_SERIAL])] == [s.truth.text]

    def rapidocr_metal(s: Sample) -> bool:
        return rapidocr_recognise(text_roi(s.truth, s.image.shape).crop(s.image)) == [s.truth.text]

    def detect(s: Sample) -> bool:
        return s.truth.text in [t.text for t in read_text(s.image, ROI(0, 200, 640, 200), detect=True)]

    sides: dict[str, tuple[Callable[[Sample], bool], list[Sample]]] = {
        "ladder": (ladder, metal),
        "bare": (bare, metal),
        "no_sampler": (no_sampler, metal),
        "frame": (frame, metal),
        "recognise": (recognise, paper),
        "detect": (detect, paper),
        "recognise_metal": (recognise_metal, metal),
        "rapidocr_metal": (rapidocr_metal, metal),
    }
    for fn, samples in sides.values():  # warm caches, ONNX Runtime's first runs
        _timed(fn, samples[:2])
    rounds = []
    for index in range(args.rounds):
        order = list(sides) if index % 2 == 0 else list(reversed(sides))
        measured = {name: _timed(*sides[name]) for name in order}
        figures: dict[str, float] = {}
        for name, (ms, hits) in measured.items():
            figures[f"{name}_p50_ms"] = float(np.percentile(ms, 50))
            figures[f"{name}_p99_ms"] = float(np.percentile(ms, 99))
            figures[f"{name}_read_rate"] = hits / len(ms)
        figures["ladder_over_bare_p50"] = figures["ladder_p50_ms"] / figures["bare_p50_ms"]
        figures["ladder_over_no_sampler_p50"] = figures["ladder_p50_ms"] / figures["no_sampler_p50_ms"]
        figures["ladder_over_no_sampler_p99"] = figures["ladder_p99_ms"] / figures["no_sampler_p99_ms"]
        figures["frame_over_region_p50"] = figures["frame_p50_ms"] / figures["ladder_p50_ms"]
        figures["detect_over_recognise_p50"] = figures["detect_p50_ms"] / figures["recognise_p50_ms"]
        figures["recognise_metal_over_rapidocr_p50"] = (
            figures["recognise_metal_p50_ms"] / figures["rapidocr_metal_p50_ms"]
        )
        figures["recognise_metal_over_rapidocr_p99"] = (
            figures["recognise_metal_p99_ms"] / figures["rapidocr_metal_p99_ms"]
        )
        rounds.append(figures)
        print(json.dumps({"round": index, **{k: round(v, 3) for k, v in figures.items()}}))
    summary = {"images": args.images, "text_images": args.text_images, "rounds": args.rounds}
    summary |= {"budget_ms": args.budget_ms, **medians_and_ranges(rounds, 3)}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
