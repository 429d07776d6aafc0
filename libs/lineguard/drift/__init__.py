"""Drift: how far a station's parts have moved from a baseline, one population stability index per feature.

Plain functions and dataclasses (docs/drift.md). A `Baseline` holds, per feature, the edges of equal-width bins
over the range of the baseline's values (the outer bins open-ended) and the share of those values in each bin;
`psi` puts the current window's values in the same bins and sums (actual - expected) * ln(actual / expected).
Equal widths rather than quantiles: a small baseline (a training set of a few dozen images) has near-equal values
that quantile edges split at random, which reads as drift where there is none. Shares are floored at EPSILON so
that an empty bin on either side gives a large, finite index instead of infinity. A feature whose baseline has one
value only (a count that never varied) gets a bin of its own: any other value is drift."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lineguard.config.drift import FEATURES, QUALITY_FEATURES, DriftSettings
from lineguard.v1.common_pb2 import ImageQuality
from lineguard.v1.decision_pb2 import Decision
from lineguard.v1.drift_pb2 import DriftLevel, FeatureDrift

EPSILON = 1e-4
LEVEL_NAMES = {
    DriftLevel.DRIFT_LEVEL_UNSPECIFIED: "UNKNOWN",
    DriftLevel.DRIFT_LEVEL_OK: "OK",
    DriftLevel.DRIFT_LEVEL_WARNING: "WARNING",
    DriftLevel.DRIFT_LEVEL_ALERT: "ALERT",
}


class BaselineError(ValueError):
    """A baseline cannot be made or read; the message says why."""


@dataclass(frozen=True)
class Histogram:
    edges: tuple[float, ...]  # inner bin edges, ascending: len(edges) + 1 bins
    expected: tuple[float, ...]  # share of the baseline's values in each bin
    mean: float

    def shares(self, values: Sequence[float] | np.ndarray) -> np.ndarray:
        counts = np.bincount(np.searchsorted(self.edges, values, side="right"), minlength=len(self.edges) + 1)
        return counts / max(len(values), 1)


@dataclass(frozen=True)
class Baseline:
    name: str  # "training" or a stored baseline's id
    histograms: dict[str, Histogram]
    samples: int
    source: str = ""  # what it was taken from, for a person

    def to_json(self) -> dict[str, Any]:
        return {
            feature: {"edges": list(h.edges), "expected": list(h.expected), "mean": h.mean}
            for feature, h in self.histograms.items()
        }

    @classmethod
    def from_json(cls, name: str, data: Mapping[str, Any], samples: int, source: str = "") -> Baseline:
        try:
            histograms = {
                feature: Histogram(tuple(map(float, h["edges"])), tuple(map(float, h["expected"])), float(h["mean"]))
                for feature, h in data.items()
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise BaselineError(f"baseline {name}: not a baseline's features ({exc})") from None
        return cls(name, histograms, samples, source)


def histogram(values: Sequence[float], bins: int) -> Histogram:
    """`bins` equal-width bins over the range of `values` and the share of them in each."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise BaselineError("no values to take a baseline from")
    low, high = float(data.min()), float(data.max())
    inner = np.linspace(low, high, bins + 1)[1:-1]
    if high == low:
        # One value only: it gets its own bin, anything below or above is another.
        value = float(data[0])
        spread = max(abs(value) * 1e-6, 1e-9)
        inner = np.array([value - spread, value + spread])
    edges = tuple(float(e) for e in inner)
    hist = Histogram(edges, (), float(data.mean()))
    return Histogram(edges, tuple(float(s) for s in hist.shares(data)), hist.mean)


def baseline_of(name: str, rows: Iterable[Mapping[str, float]], bins: int, source: str = "") -> Baseline:
    """A baseline from feature rows (each a dict of some FEATURES); a feature no row has is left out."""
    columns: dict[str, list[float]] = {}
    count = 0
    for row in rows:
        count += 1
        for feature, value in row.items():
            if feature in FEATURES and value is not None and math.isfinite(value):
                columns.setdefault(feature, []).append(float(value))
    if not columns:
        raise BaselineError(f"baseline {name}: none of the {count} parts has a feature to compare")
    return Baseline(name, {f: histogram(v, bins) for f, v in columns.items()}, count, source)


def psi(hist: Histogram, values: Sequence[float]) -> float:
    """The population stability index of `values` against the baseline's histogram."""
    actual = np.maximum(hist.shares(values), EPSILON)
    expected = np.maximum(np.asarray(hist.expected), EPSILON)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def quality_features(quality: ImageQuality) -> dict[str, float]:
    return {name: float(getattr(quality, name)) for name in QUALITY_FEATURES}


def decision_features(decision: Decision) -> dict[str, float]:
    """What one decided part contributes: its frame's quality when measured, and the model's figures when it ran."""
    found: dict[str, float] = {}
    if not decision.HasField("inference"):
        return found
    inference = decision.inference
    if inference.HasField("image_quality"):
        found.update(quality_features(inference.image_quality))
    found["max_score"] = max((d.score for d in inference.detections), default=0.0)
    found["detections"] = float(len(inference.detections))
    return found


def level_of(value: float, settings: DriftSettings) -> DriftLevel:
    if value >= settings.alert_psi:
        return DriftLevel.DRIFT_LEVEL_ALERT
    if value >= settings.warn_psi:
        return DriftLevel.DRIFT_LEVEL_WARNING
    return DriftLevel.DRIFT_LEVEL_OK


@dataclass
class Judged:
    """A window judged against a baseline."""

    level: DriftLevel
    features: list[FeatureDrift] = field(default_factory=list)
    detail: str = ""


def judge(baseline: Baseline, window: Sequence[Mapping[str, float]], settings: DriftSettings) -> Judged:
    """Each configured feature's PSI over the window; OK (not judged) while the window holds under min_samples."""
    judged = Judged(DriftLevel.DRIFT_LEVEL_OK)
    if len(window) < settings.min_samples:
        judged.detail = f"{len(window)} parts in the window, under min_samples={settings.min_samples}: not judged"
        return judged
    worst: list[str] = []
    for feature in settings.features:
        hist = baseline.histograms.get(feature)
        values = [row[feature] for row in window if feature in row]
        if hist is None or len(values) < settings.min_samples:
            continue
        index = psi(hist, values)
        level = level_of(index, settings)
        judged.features.append(
            FeatureDrift(
                feature=feature,
                psi=index,
                level=level,
                baseline_mean=hist.mean,
                current_mean=float(np.mean(values)),
            )
        )
        judged.level = max(judged.level, level)
        if level != DriftLevel.DRIFT_LEVEL_OK:
            limit = settings.alert_psi if level == DriftLevel.DRIFT_LEVEL_ALERT else settings.warn_psi
            worst.append(f"{feature} PSI {index:.2f} >= {limit:g} (mean {hist.mean:.3g} -> {np.mean(values):.3g})")
    judged.detail = "; ".join(worst)
    return judged
