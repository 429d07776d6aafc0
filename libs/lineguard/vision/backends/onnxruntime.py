"""ONNX Runtime: the CPU provider everywhere, the CUDA provider with onnxruntime-gpu.

Providers come from the model's `device` ('cpu', the default -> CPU; 'cuda[:N]' -> CUDA then
CPU) unless the backend's `providers` lists them. A requested provider this onnxruntime build
lacks is an error, not the silent fall-back to the CPU that onnxruntime itself would make."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from lineguard.config.seams import BackendSettings
from lineguard.vision.backends.base import TensorSpec, cpu_threads, cuda_index, require
from lineguard.vision.errors import ModelLoadError

KEY = "onnxruntime"
INSTALL = "the onnxruntime package (onnxruntime-gpu for CUDA)"

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}


class Settings(BackendSettings):
    kind: Literal["onnxruntime"] = "onnxruntime"
    providers: list[str] | None = Field(
        None,
        description="execution providers in order of preference; default from device "
        "(cpu: CPUExecutionProvider; cuda[:N]: CUDAExecutionProvider, CPUExecutionProvider)",
    )


def providers_for(settings: Settings, device: str) -> list[Any]:
    """What InferenceSession is given: names, with the CUDA device id where the device names one."""
    if settings.providers:
        return list(settings.providers)
    if device == "cpu":
        return ["CPUExecutionProvider"]
    try:
        index = cuda_index(device)
    except ValueError as exc:
        raise ValueError(f"{exc}; onnxruntime runs on 'cpu' or 'cuda[:N]'") from None
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


def _spec(node: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else None for d in node.shape)
    return TensorSpec(node.name, shape, np.dtype(_DTYPES.get(node.type, np.float32)))


class OrtRunner:
    backend = KEY

    def __init__(self, session: Any, device: str):
        self.session = session
        self.device = device
        self.input = _spec(session.get_inputs()[0])
        self.outputs = tuple(_spec(o) for o in session.get_outputs())
        self.metadata = dict(session.get_modelmeta().custom_metadata_map)
        self._names = [o.name for o in self.outputs]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self._names, {self.input.name: batch})

    def close(self) -> None:
        self.session = None


def apply_threads(options: Any, threads: int) -> None:
    """The line's thread settings on onnxruntime SessionOptions (the service's and the bare benchmark's alike).

    Spinning is off: onnxruntime's pool threads otherwise spin between operators, waiting for work, and that CPU
    is what the other processes of the line need (it doubled the model's CPU per image here, 85 ms against 42)."""
    options.intra_op_num_threads = cpu_threads(threads)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")


def load(path: Path, settings: Settings, device: str | None, threads: int) -> OrtRunner:
    ort = require("onnxruntime", path, KEY, INSTALL)
    if not path.is_file():
        raise ModelLoadError(path, "file not found" if not path.exists() else "not a file")
    device = device or "cpu"
    try:
        providers = providers_for(settings, device)
    except ValueError as exc:
        raise ModelLoadError(path, str(exc)) from None
    available = ort.get_available_providers()
    missing = [p for p in (p if isinstance(p, str) else p[0] for p in providers) if p not in available]
    if missing:
        raise ModelLoadError(
            path,
            f"onnxruntime {ort.__version__} here has no {', '.join(missing)} "
            f"(it has {', '.join(available)}); CUDA needs the onnxruntime-gpu package",
        )
    session_options = ort.SessionOptions()
    apply_threads(session_options, threads)
    try:
        session = ort.InferenceSession(str(path), sess_options=session_options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise ModelLoadError(path, f"not a loadable ONNX model ({type(exc).__name__}: {exc})") from None
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelLoadError(path, f"expected one NCHW image input, got {[(i.name, i.shape) for i in inputs]}")
    return OrtRunner(session, device)
