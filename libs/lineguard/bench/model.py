"""The model alone: its runtime's run in a loop on one prepared sample board, the raw baseline every line figure
is a ratio to (no decode, no letterbox, no NMS, no bus)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lineguard.samples import SAMPLE_BOARDS
from lineguard.vision.detect import prepare
from lineguard.vision.model import load_model

# The board every bare run takes: one of the shipped samples, with its template as the paired model's reference.
BOARD = SAMPLE_BOARDS / "00041000_test.jpg"


@dataclass(frozen=True)
class Runtime:
    """What runs the model, on both sides of a ratio: the backend, its device and its CPU threads (0 as
    `model.intra_op_threads` 0 means)."""

    backend: str = "onnxruntime"
    device: str = "cpu"
    threads: int = 0  # 0: lineguard's default (lineguard.vision.backends.base.cpu_threads)

    @property
    def raw_onnxruntime(self) -> bool:
        return self.backend == "onnxruntime" and self.device == "cpu"

    @property
    def bare(self) -> str:
        return "bare onnxruntime session.run" if self.raw_onnxruntime else f"bare {self.backend} run ({self.device})"


@dataclass(frozen=True)
class BareRun:
    images_per_s: float
    latencies_ms: list[float]  # per run (per batch)
    cpu_ms_per_image: float  # this process's CPU time (every runtime thread) per image

    @property
    def p50_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 50))

    @property
    def p99_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 99))


def board_tensor(model: Path) -> np.ndarray:
    """The input the inference service gives `model` for a sample board (its card's size and padding and, for a
    paired model, the board beside its template)."""
    board = cv2.imread(str(BOARD))
    template = cv2.imread(str(BOARD).replace("_test.jpg", "_temp.jpg"))
    if board is None or template is None:
        raise FileNotFoundError(f"the sample board {BOARD} or its template is missing from the package")
    return prepare(load_model(model, intra_op_threads=1), board, reference=template).tensor


def bare_run(model: Path, runtime: Runtime, images: int, batch: int = 1) -> BareRun:
    """`images` images through the runtime alone: onnxruntime's session.run on the CPU provider, or, for another
    backend or device (TensorRT on a GPU, OpenVINO), that backend's runner as the service loads it."""
    tensor = board_tensor(model)
    if runtime.raw_onnxruntime:
        import onnxruntime as ort

        from lineguard.vision.backends.onnxruntime import apply_threads

        options = ort.SessionOptions()
        apply_threads(options, runtime.threads)  # the threads (and no spinning) the service runs it with
        session = ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        fixed = session.get_inputs()[0].shape[0]
        fixed = fixed if isinstance(fixed, int) else None

        def run(x: np.ndarray) -> None:
            session.run(None, {name: x})
    else:
        detector = load_model(model, backend=runtime.backend, device=runtime.device, intra_op_threads=runtime.threads)
        fixed = detector.max_batch

        def run(x: np.ndarray) -> None:
            detector.runner.run(x)

    # A model that takes a fixed batch takes the batch in pieces of that size, as the service runs it.
    piece = fixed if fixed is not None and fixed < batch else batch
    tensor = np.repeat(tensor, piece, axis=0)
    for _ in range(3):
        run(tensor)
    latencies = []
    cpu_started, started = time.process_time(), time.perf_counter()
    for _ in range(max(1, images // batch)):
        t = time.perf_counter()
        for _ in range(batch // piece):
            run(tensor)
        latencies.append((time.perf_counter() - t) * 1000)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    done = len(latencies) * batch
    return BareRun(done / elapsed, latencies, cpu * 1000 / done)
