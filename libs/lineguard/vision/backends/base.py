"""What every backend provides: a runner that takes an NCHW batch and gives the model's outputs.

A backend is a module on the BACKENDS seam (lineguard.config.seams) that declares
- `KEY`: the name configuration picks it by (`model.backend: KEY` or `model.backend: {kind: KEY, ...}`);
- `INSTALL`: what to install for its runtime (named in the error when it is missing);
- `Settings`: its own options, a `BackendSettings` subclass with `kind: Literal[KEY]` (unknown keys are
  errors, found when the line's configuration is validated);
- `load(path, settings, device, threads) -> Runner`: `device` is `model.device` (None: the backend's own
  default device), `threads` is `model.intra_op_threads` (0: half the cores, `cpu_threads`). It imports the
  runtime itself, so choosing another backend never imports this one's runtime."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Protocol

import numpy as np

from lineguard.vision.errors import BackendUnavailable


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a loaded model; None in `shape` is a dimension the model leaves open."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the model was exported with, or None when it takes any."""
        return self.shape[0] if self.shape else None


class Runner(Protocol):
    """A model loaded on one backend and device, ready to run."""

    backend: str
    device: str
    input: TensorSpec
    outputs: tuple[TensorSpec, ...]
    metadata: dict[str, str]  # the ONNX file's metadata_props where the backend exposes them, else empty

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """(N, C, H, W) in `input.dtype` -> the model's outputs, in the order of `outputs`."""
        ...

    def close(self) -> None:
        """Free what the runner holds (GPU memory, sessions)."""
        ...


def cpu_threads(threads: int, cores: int | None = None) -> int:
    """The CPU threads a backend runs the model on for `model.intra_op_threads`: `threads`, or for 0 half the cores
    this process may use, at least one. The model shares the box with the line's other processes (capture, ocr,
    decision, gateway, results, nats-server, and the frame's decode beside the model): on 2 cores the packaged model
    ran 8 img/s on onnxruntime's own default (a thread per core) and 15 on one thread, and the line judged 5.7
    parts/s against 9.8 (docs/benchmarks.md, threads)."""
    if threads:
        return threads
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // 2)


def require(module: str, path: Path, backend: str, install: str) -> ModuleType:
    """Import a backend's runtime, or say which package provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailable(path, backend, install, f"cannot import {module}: {exc}") from None


def cuda_index(device: str) -> int:
    """'cuda' -> 0, 'cuda:1' -> 1; anything else is not a CUDA device."""
    name, _, index = device.partition(":")
    if name != "cuda" or (index and not index.isdigit()):
        raise ValueError(f"device {device!r} is not 'cuda' or 'cuda:N'")
    return int(index or 0)
