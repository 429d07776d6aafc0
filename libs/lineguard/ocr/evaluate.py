"""Scores of the readers on a generated label set (`lineguard ocr make-labels`): codes (read rate and
exact match per field, false reads: a wrong value returned, the worst outcome; latency), the printed line
(exact match, character error rate, false reads of the serial as a recipe would check it, latency), and
what each ladder step earns."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from lineguard.config.ocr import FieldRule
from lineguard.imaging import ROI
from lineguard.ocr.codes import LADDER, STEPS, FoundCode, formats_named, read_ladder
from lineguard.ocr.fields import validate_field
from lineguard.ocr.labels import Truth
from lineguard.ocr.text import TextLine, read_text, warm_up

# Fields a label carries and where a reader finds them: the DataMatrix's serial (bare, or GS1 AI 21),
# its GS1 elements, and the QR's serial.
GS1_FIELDS = {"gtin": "01", "batch": "10", "serial": "21", "expiry": "17", "production": "11"}


# The generated labels' printed serial checked as a recipe would: `LG-`, seven digits, their check digit.
# A line that passes is returned as the serial, so a wrong one that passes is a false read.
TEXT_SERIAL = FieldRule(source="text", pattern=r"LG-\d{7}-\d", checksum="digits-mod10")


@dataclass
class Sample:
    path: Path
    image: np.ndarray
    truth: Truth


def load_set(folder: Path) -> list[Sample]:
    samples = []
    for png in sorted(folder.glob("label-*.png")):
        image = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise ValueError(f"{png}: not a readable image")
        samples.append(Sample(png, image, Truth.from_json(png.with_suffix(".json").read_text())))
    if not samples:
        raise ValueError(f"{folder}: no label-*.png with its truth (make one with lineguard ocr make-labels)")
    return samples


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def text_roi(truth: Truth, shape: tuple[int, ...], margin: int = 12) -> ROI:
    """The truth's text box and `margin` px around it, inside an image of `shape`: the box a recipe's
    ocr.text_roi would give for this label (recognition only)."""
    h, w = shape[:2]
    x1, y1 = max(0, int(truth.text_box[0]) - margin), max(0, int(truth.text_box[1]) - margin)
    x2, y2 = min(w, int(truth.text_box[2]) + margin), min(h, int(truth.text_box[3]) + margin)
    return ROI(x1, y1, x2 - x1, y2 - y1)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: characters inserted, deleted or substituted to turn `a` into `b`."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


@dataclass
class TextScore:
    """The printed line: per label, the lines read in its text box."""

    images: int = 0
    exact: int = 0  # a line equals the truth
    serial: int = 0  # the serial field (TEXT_SERIAL) valid with the true value
    false: int = 0  # the serial field valid with a wrong value
    edits: int = 0  # edit distance of the closest line to the truth, summed
    chars: int = 0  # truth characters, summed
    ms: list[float] = field(default_factory=list)
    # CPU time of this process per read (time.process_time): what a read costs the OCR service's core,
    # whatever else loads the machine
    cpu_ms: list[float] = field(default_factory=list)

    def add(self, truth: str, lines: list[TextLine], ms: float, cpu_ms: float | None = None) -> None:
        texts = [t.text for t in lines]
        self.images += 1
        self.ms.append(ms)
        if cpu_ms is not None:
            self.cpu_ms.append(cpu_ms)
        self.exact += truth in texts
        self.edits += min((edit_distance(t, truth) for t in texts), default=len(truth))
        self.chars += len(truth)
        value = validate_field("serial", TEXT_SERIAL, [], texts).value
        self.serial += value == truth
        self.false += bool(value) and value != truth

    def summary(self) -> dict[str, object]:
        n = max(self.images, 1)
        return {
            "images": self.images,
            "exact_rate": round(self.exact / n, 4),
            "serial_valid_rate": round(self.serial / n, 4),
            "false_reads": self.false,
            "cer": round(self.edits / max(self.chars, 1), 4),
            "ms_p50": round(_percentile(self.ms, 50), 2),
            "ms_p99": round(_percentile(self.ms, 99), 2),
        } | self._cpu()

    def _cpu(self) -> dict[str, object]:
        if not self.cpu_ms:
            return {}
        return {
            "cpu_ms_p50": round(_percentile(self.cpu_ms, 50), 2),
            "cpu_ms_p99": round(_percentile(self.cpu_ms, 99), 2),
        }


@dataclass
class Score:
    images: int = 0
    expected: dict[str, int] = field(default_factory=dict)  # symbology or field -> labels that carry it
    read: dict[str, int] = field(default_factory=dict)  # ... -> read with the true value
    false: dict[str, int] = field(default_factory=dict)  # ... -> read with a wrong value
    ms: list[float] = field(default_factory=list)
    by_surface: dict[str, list[int]] = field(default_factory=dict)  # "metal dot-peen" -> [read, expected]
    text: TextScore | None = None  # the printed line, when it was read

    def add(self, key: str, truth: str, values: list[str]) -> None:
        self.expected[key] = self.expected.get(key, 0) + 1
        if truth in values:
            self.read[key] = self.read.get(key, 0) + 1
        if any(v != truth for v in values):
            self.false[key] = self.false.get(key, 0) + 1

    def summary(self) -> dict[str, object]:
        keys = sorted(self.expected)
        return {
            "images": self.images,
            "read_rate": {k: round(self.read.get(k, 0) / self.expected[k], 4) for k in keys},
            "false_reads": {k: self.false.get(k, 0) for k in keys},
            "datamatrix_by_kind": {k: f"{r}/{n}" for k, (r, n) in sorted(self.by_surface.items())},
            "ms_p50": round(_percentile(self.ms, 50), 2),
            "ms_p99": round(_percentile(self.ms, 99), 2),
            "ms_max": round(max(self.ms, default=0.0), 2),
        } | ({"text": self.text.summary()} if self.text else {})


def score_reading(score: Score, truth: Truth, codes: list[FoundCode], ms: float) -> None:
    score.images += 1
    score.ms.append(ms)
    for expected in truth.codes:
        values = [c.text for c in codes if c.symbology == expected.symbology and not c.error]
        score.add(expected.symbology, expected.text, values)
        if expected.symbology == "DataMatrix":
            kind = f"{truth.surface} {'dot-peen' if expected.dot_peen else 'marked'}"
            tally = score.by_surface.setdefault(kind, [0, 0])
            tally[0] += expected.text in values
            tally[1] += 1
            dm = [c for c in codes if c.symbology == "DataMatrix" and not c.error]
            # The serial field: GS1 AI 21 of a GS1 symbol, else the symbol's text.
            score.add("field serial", truth.serial, [c.gs1.get("21", "") if c.gs1 else c.text for c in dm])
            for name, ai in GS1_FIELDS.items():
                if expected.gs1 and name != "serial":
                    score.add(f"field {name}", expected.gs1[ai], [c.gs1.get(ai, "") for c in dm if c.gs1])


def evaluate(
    samples: Sequence[Sample],
    *,
    formats: Sequence[str] = ("DataMatrix", "QRCode"),
    budget_ms: float = 40.0,
    ladder: Sequence[str] = LADDER,
    text: bool = False,
    constrain: bool = True,
) -> Score:
    """The ladder on every sample, reading until every format in `formats` is found. With `text`, also the
    printed line, recognition only in the truth's text box (text_roi), as a recipe with ocr.text_roi reads
    it, constrained by the serial's pattern and check digit (TEXT_SERIAL) unless `constrain` is False; the
    models load first (about 2 s, not counted)."""
    score = Score()
    zx_formats = formats_named(formats)
    if text:
        warm_up()
        score.text = TextScore()
    for sample in samples:
        reading = read_ladder(sample.image, formats=zx_formats, wanted=formats, budget_ms=budget_ms, ladder=ladder)
        score_reading(score, sample.truth, reading.codes, reading.ms)
        if score.text is not None:
            started, cpu = time.perf_counter(), time.process_time()
            roi = text_roi(sample.truth, sample.image.shape)
            lines = read_text(sample.image, roi, detect=False, rules=[TEXT_SERIAL] if constrain else ())
            ms, cpu_ms = (time.perf_counter() - started) * 1000, (time.process_time() - cpu) * 1000
            score.text.add(sample.truth.text, lines, ms, cpu_ms)
    return score


def step_report(samples: Sequence[Sample], symbology: str = "DataMatrix") -> list[dict[str, object]]:
    """Each step of STEPS alone on every sample (one symbology): its read rate, the reads no step of the
    current LADDER before it makes, and its cost; then the ladder's cumulative rate step by step."""
    fmt = formats_named([symbology])
    truths = [next(c.text for c in s.truth.codes if c.symbology == symbology) for s in samples]
    solo: dict[str, list[bool]] = {}
    cost: dict[str, float] = {}
    for name in STEPS:
        hits = []
        started = time.perf_counter()
        for sample, truth in zip(samples, truths, strict=True):
            reading = read_ladder(sample.image, formats=fmt, ladder=(name,), budget_ms=1e9)
            hits.append(any(c.text == truth for c in reading.codes))
        cost[name] = (time.perf_counter() - started) * 1000 / len(samples)
        solo[name] = hits
    covered = [False] * len(samples)
    rows = []
    for name in LADDER:
        gained = sum(h and not c for h, c in zip(solo[name], covered, strict=True))
        covered = [h or c for h, c in zip(solo[name], covered, strict=True)]
        rows.append(_row(name, solo[name], cost[name], gained, sum(covered) / len(samples), True))
    for name in STEPS:
        if name not in LADDER:
            gained = sum(h and not c for h, c in zip(solo[name], covered, strict=True))
            rows.append(_row(name, solo[name], cost[name], gained, None, False))
    return rows


def _row(
    name: str, hits: list[bool], ms: float, gained: int, cumulative: float | None, kept: bool
) -> dict[str, object]:
    return {
        "step": name,
        "on_ladder": kept,
        "alone": round(sum(hits) / len(hits), 4),
        "reads_the_ladder_misses" if not kept else "gained_over_steps_before": gained,
        "ladder_rate_after": None if cumulative is None else round(cumulative, 4),
        "ms": round(ms, 2),
    }
