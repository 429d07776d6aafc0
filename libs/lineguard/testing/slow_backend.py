"""A model backend for tests: the onnxruntime backend with every run slowed by `delay_ms` (a slow box, a model
slower than the camera), so that an overload is made by the model's own pace, not by a timed burst. A test adds it
with `BACKENDS.register(lineguard.testing.slow_backend)` and names it `model.backend: {kind: slowed, delay_ms: N}`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from lineguard.config.seams import BackendSettings
from lineguard.vision.backends import onnxruntime

KEY = "slowed"
INSTALL = "nothing beyond the base install (it wraps onnxruntime)"


class Settings(BackendSettings):
    kind: Literal["slowed"] = "slowed"
    delay_ms: float = Field(300.0, ge=0, description="added to every run of the model")


class SlowedRunner:
    backend = KEY

    def __init__(self, runner: onnxruntime.OrtRunner, delay_s: float):
        self.runner = runner
        self.delay_s = delay_s
        self.device = runner.device
        self.input, self.outputs, self.metadata = runner.input, runner.outputs, runner.metadata
        self.runs = 0

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        self.runs += 1
        time.sleep(self.delay_s)
        return self.runner.run(batch)

    def close(self) -> None:
        self.runner.close()


def load(path: Path, settings: Settings, device: str | None, threads: int) -> SlowedRunner:
    runner = onnxruntime.load(path, onnxruntime.Settings(), device, threads)
    return SlowedRunner(runner, settings.delay_ms / 1000)
