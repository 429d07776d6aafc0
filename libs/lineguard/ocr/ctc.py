"""Reading a CTC recogniser's output (PP-OCR's): the plain best path, and the best string a field's pattern
and check allow.

The recogniser gives, for each of T steps across the line, a probability for every character and for the
blank. Its plain reading takes the likeliest symbol at each step and collapses repeats and blanks; a
confusable character ("G" seen as "0") then fails the field's pattern. The constrained reading is a CTC
prefix beam search in which a prefix survives only while the field's regular expression can still match
it (the `regex` module's partial matching), and whose result must match it whole and pass the field's
check (its checksum). It returns no string the check refuses: a wrong value comes out only where the
image is read wrong in a way the check cannot see (for the digits-mod10 serial: two digits wrong whose
errors cancel, or a digit swapped for the one the check digit allows)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import regex  # type: ignore[import-untyped]

BLANK = 0  # PP-OCR's (and rapidocr's) blank is class 0
# The least likely constrained string given out (natural log of its CTC probability). Measured on the
# default metal set (docs/ocr.md): the corrections that were right scored -1.4 to -14.2, the three that
# passed the checksum with a wrong serial -15.1 to -18.8; -10 keeps 8 of those 10 corrections.
MIN_LOG_PROB = -10.0


@dataclass(frozen=True)
class Decoded:
    text: str
    # per character, the probability at the step that emitted it; empty for a constrained reading, whose
    # characters need not be any step's likeliest
    char_confidences: tuple[float, ...]
    log_prob: float  # of the string (all its CTC paths), natural log

    @property
    def confidence(self) -> float:
        if self.char_confidences:
            return float(np.mean(self.char_confidences))
        return float(np.exp(self.log_prob / max(len(self.text), 1)))


def best_path(probs: np.ndarray, charset: Sequence[str]) -> Decoded:
    """The likeliest symbol per step, repeats and blanks collapsed (what rapidocr returns as the text)."""
    ids = probs.argmax(axis=1)
    keep = (ids != BLANK) & np.concatenate(([True], ids[1:] != ids[:-1]))
    steps = np.flatnonzero(keep)
    text = "".join(charset[int(ids[t])] for t in steps)
    confs = tuple(float(probs[t, ids[t]]) for t in steps)
    return Decoded(text, confs, _string_log_prob(probs, [int(ids[t]) for t in steps]))


def _string_log_prob(probs: np.ndarray, labels: Sequence[int]) -> float:
    """log P(labels | probs) summed over every CTC path (the forward algorithm, scaled per step)."""
    ext = [BLANK]
    for label in labels:
        ext += [label, BLANK]
    n = len(ext)
    alpha = np.zeros(n)
    alpha[0] = probs[0, BLANK]
    if n > 1:
        alpha[1] = probs[0, ext[1]]
    log_scale = 0.0
    ext_arr = np.array(ext)
    # A step may skip the blank between two different labels.
    skip = np.zeros(n, dtype=bool)
    skip[2:] = (ext_arr[2:] != BLANK) & (ext_arr[2:] != ext_arr[:-2])
    for t in range(1, len(probs)):
        moved = alpha.copy()
        moved[1:] += alpha[:-1]
        moved[2:] += np.where(skip[2:], alpha[:-2], 0.0)
        alpha = moved * probs[t, ext_arr]
        total = alpha.sum()
        if total <= 0:
            return float("-inf")
        alpha /= total
        log_scale += float(np.log(total))
    end = alpha[-1] + (alpha[-2] if n > 1 else 0.0)
    return log_scale + float(np.log(end)) if end > 0 else float("-inf")


def constrained(
    probs: np.ndarray,
    charset: Sequence[str],
    pattern: str,
    accept: Callable[[str], bool] = lambda _: True,
    *,
    beam: int = 24,
    top_k: int = 12,
    floor: float = 1e-4,
    min_log_prob: float = MIN_LOG_PROB,
) -> Decoded | None:
    """The likeliest string that fullmatches `pattern` and that `accept` takes (the field's checksum), or
    None when no string the beam keeps does, or the best one is less likely than exp(`min_log_prob`).
    Per step, the `top_k` likeliest characters above `floor`
    are the ones tried, so a character the recogniser gives no weight to is never made up."""
    can_grow = _partial_matcher(pattern)
    # prefix (class ids) -> [p ending in blank, p ending in its last label], scaled per step
    beams: dict[tuple[int, ...], list[float]] = {(): [1.0, 0.0]}
    log_scale = 0.0
    for t in range(len(probs)):
        row = probs[t]
        likeliest = np.argpartition(row, -top_k)[-top_k:]
        picks = [int(c) for c in likeliest if c != BLANK and row[c] >= floor]
        grown: dict[tuple[int, ...], list[float]] = {}
        blank = float(row[BLANK])
        for prefix, (pb, pnb) in beams.items():
            here = grown.setdefault(prefix, [0.0, 0.0])
            here[0] += (pb + pnb) * blank
            if prefix:
                here[1] += pnb * float(row[prefix[-1]])  # the last label held over this step
            for c in picks:
                longer = (*prefix, c)
                if not can_grow("".join(charset[i] for i in longer)):
                    continue
                slot = grown.setdefault(longer, [0.0, 0.0])
                # A repeat of the last label needs a blank between them.
                slot[1] += (pb if prefix and prefix[-1] == c else pb + pnb) * float(row[c])
        kept = sorted(grown.items(), key=lambda kv: kv[1][0] + kv[1][1], reverse=True)[:beam]
        total = sum(pb + pnb for _, (pb, pnb) in kept)
        if total <= 0:
            return None
        beams = {p: [pb / total, pnb / total] for p, (pb, pnb) in kept}
        log_scale += float(np.log(total))
    whole = regex.compile(pattern)
    for prefix, (pb, pnb) in sorted(beams.items(), key=lambda kv: kv[1][0] + kv[1][1], reverse=True):
        text = "".join(charset[i] for i in prefix)
        if whole.fullmatch(text) and accept(text):
            log_prob = log_scale + float(np.log(pb + pnb))
            if log_prob < min_log_prob:
                return None
            return Decoded(text, (), log_prob)
    return None


@lru_cache(maxsize=64)
def _partial_matcher(pattern: str) -> Callable[[str], bool]:
    compiled = regex.compile(pattern)

    @lru_cache(maxsize=65536)
    def can_grow(prefix: str) -> bool:
        return compiled.fullmatch(prefix, partial=True) is not None

    return can_grow
