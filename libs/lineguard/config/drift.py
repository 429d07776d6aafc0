"""The drift watch's thresholds and each station's golden-part self-test, as configured (docs/drift.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# The features the drift watch compares with its baseline: the frame's image quality (capture), the model's
# highest score on the part and its number of detections (inference).
QUALITY_FEATURES: tuple[str, ...] = ("brightness", "contrast", "sharpness", "saturated")
MODEL_FEATURES: tuple[str, ...] = ("max_score", "detections")
FEATURES: tuple[str, ...] = (*QUALITY_FEATURES, *MODEL_FEATURES)
Feature = Literal["brightness", "contrast", "sharpness", "saturated", "max_score", "detections"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DriftSettings(_Strict):
    enabled: bool = Field(True, description="the results service watches each station's drift")
    features: list[Feature] = Field(
        default_factory=lambda: list(FEATURES),  # type: ignore[arg-type]  # FEATURES holds every Feature
        description="what is compared",
    )
    warn_psi: float = Field(0.1, gt=0, description="a feature's PSI at or over this: WARNING")
    alert_psi: float = Field(0.25, gt=0, description="a feature's PSI at or over this: ALERT (a warning at the PLC)")
    window: int = Field(500, ge=10, description="the latest parts of the station's current shift that are compared")
    min_samples: int = Field(50, ge=5, description="fewer parts in the window: not judged yet (OK)")
    bins: int = Field(
        10,
        ge=2,
        le=50,
        description="equal-width bins per feature of a baseline: the packaged boards' a station without a stored one "
        "is compared with, and `lineguard drift baseline`'s default",
    )
    publish_s: float = Field(10.0, gt=0, description="how often each station's state is judged and published")

    @model_validator(mode="after")
    def _ordered(self) -> DriftSettings:
        if self.alert_psi < self.warn_psi:
            raise ValueError(f"alert_psi ({self.alert_psi}) is below warn_psi ({self.warn_psi})")
        if self.min_samples > self.window:
            raise ValueError(f"min_samples ({self.min_samples}) is over window ({self.window})")
        return self


class GoldenCase(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$", max_length=64)
    image: str = Field(description="the stored golden image (jpeg, png or bmp) as the camera would see the part")
    reference: str | None = Field(None, description="its defect-free reference, for paired models")
    expect: Literal["PASS", "FAIL", "REWORK"] = Field(description="the verdict the station must give it")
    reasons: list[str] = Field(default_factory=list, description="reason codes the verdict must include")


class SelfTestSettings(_Strict):
    cases: list[GoldenCase] = Field(min_length=1, description="a good part and parts with known defects")
    interval_s: float = Field(3600.0, ge=0, description="how often the gateway runs it; 0: only on command")
    timeout_s: float = Field(30.0, gt=0, description="how long a run waits for each case's verdict")

    @model_validator(mode="after")
    def _unique(self) -> SelfTestSettings:
        names = [case.name for case in self.cases]
        if len(set(names)) != len(names):
            raise ValueError(f"golden case names repeat: {', '.join(sorted(names))}")
        return self
