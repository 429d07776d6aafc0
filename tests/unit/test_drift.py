"""The drift watch's arithmetic (lineguard.drift), its settings, and a self-test case's judgement."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from lineguard.config.drift import DriftSettings
from lineguard.drift import Baseline, baseline_of, histogram, judge, psi
from lineguard.imagequality import measure
from lineguard.services.gateway.selftest import judge_case
from lineguard.testing.records import sample_decision
from lineguard.v1.decision_pb2 import Verdict
from lineguard.v1.drift_pb2 import DriftLevel

RNG = np.random.default_rng(7)


def test_the_same_population_has_a_small_index_and_a_shifted_one_a_large_one() -> None:
    base = histogram(RNG.normal(150, 10, 2000).tolist(), 10)
    assert psi(base, RNG.normal(150, 10, 500).tolist()) < 0.05
    assert psi(base, RNG.normal(165, 10, 500).tolist()) > 0.25
    assert psi(base, RNG.normal(50, 10, 500).tolist()) > 5  # all outside the baseline: large, finite
    assert np.isfinite(psi(base, [1e9] * 100))


def test_a_feature_that_never_varied_drifts_on_any_other_value() -> None:
    counts = histogram([0.0] * 100, 10)
    assert psi(counts, [0.0] * 50) < 1e-6
    assert psi(counts, [1.0] * 50) > 1


def test_judge_waits_for_min_samples_and_names_what_crossed() -> None:
    settings = DriftSettings(window=100, min_samples=20)
    baseline = baseline_of("training", [{"brightness": v} for v in RNG.normal(150, 10, 500)], bins=10)
    assert judge(baseline, [{"brightness": 40.0}] * 19, settings).level == DriftLevel.DRIFT_LEVEL_OK
    judged = judge(baseline, [{"brightness": 40.0}] * 20, settings)
    assert judged.level == DriftLevel.DRIFT_LEVEL_ALERT and judged.detail.startswith("brightness PSI")
    assert Baseline.from_json("7", baseline.to_json(), 500).histograms == baseline.histograms


def test_thresholds_are_checked_when_the_file_is() -> None:
    with pytest.raises(ValidationError, match="alert_psi"):
        DriftSettings(warn_psi=0.3, alert_psi=0.2)
    with pytest.raises(ValidationError, match="min_samples"):
        DriftSettings(window=20, min_samples=30)


def test_darker_pixels_measure_darker_and_a_blur_less_sharp() -> None:
    board = RNG.integers(0, 256, (600, 800), dtype=np.uint8)
    lit, dark = measure(board), measure((board * 0.3).astype(np.uint8))
    assert dark.brightness < 0.35 * lit.brightness and dark.contrast < lit.contrast
    assert measure(cv2.GaussianBlur(board, (9, 9), 3)).sharpness < 0.2 * lit.sharpness
    assert measure(np.full((50, 50, 3), 255, np.uint8)).saturated == 1.0


def test_a_golden_case_changes_on_another_verdict_a_missing_reason_or_no_verdict() -> None:
    failed = sample_decision(verdict=Verdict.VERDICT_FAIL)
    failed.reason_codes[:] = ["DEFECT_SHORT"]
    assert not judge_case("short", "FAIL", ["DEFECT_SHORT"], failed).changed
    assert judge_case("short", "FAIL", ["DEFECT_SPUR"], failed).changed
    assert judge_case("good", "PASS", [], failed).changed
    assert judge_case("good", "PASS", [], None).changed
