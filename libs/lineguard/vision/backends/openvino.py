"""OpenVINO: Intel CPUs, integrated GPUs and NPUs, reading the ONNX file directly.

The model's `device` is 'cpu' (the default) or an OpenVINO device name ('GPU', 'NPU',
'AUTO'); the `openvino` extra installs the runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from lineguard.config.seams import BackendSettings
from lineguard.vision.backends.base import TensorSpec, cpu_threads, require
from lineguard.vision.errors import ModelLoadError

KEY = "openvino"
INSTALL = "the openvino package (pip install 'lineguard[openvino]')"


class Settings(BackendSettings):
    kind: Literal["openvino"] = "openvino"
    hint: Literal["latency", "throughput"] = Field(
        "latency", description="OpenVINO's performance hint: one frame fast, or many frames in parallel"
    )
    precision: Literal["f32", "bf16", "f16"] = Field(
        "f32",
        description="inference precision; OpenVINO itself would pick bf16 on CPUs with AMX / AVX512-BF16, "
        "shifting scores by about 0.02 from the validated model's",
    )


def _spec(port: Any) -> TensorSpec:
    shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    return TensorSpec(port.get_any_name(), shape, np.dtype(port.get_element_type().to_dtype()))


def _metadata(model: Any) -> dict[str, str]:
    # The ONNX metadata_props (Ultralytics' names, imgsz, task) land under rt_info "framework".
    try:
        framework = model.get_rt_info()["framework"]
        return {str(k): str(v.astype(str)) for k, v in framework.items()}
    except Exception:  # noqa: BLE001 - a model without that metadata is fine; the card says it
        return {}


class OpenVinoRunner:
    backend = KEY

    def __init__(self, compiled: Any, device: str, metadata: dict[str, str]):
        self.compiled = compiled
        self.device = device
        self.request = compiled.create_infer_request()
        self.input = _spec(compiled.inputs[0])
        self.outputs = tuple(_spec(o) for o in compiled.outputs)
        self.metadata = metadata

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        results = self.request.infer({0: batch})
        # Copies: the request reuses its output buffers on the next infer.
        return [np.array(results[port]) for port in self.compiled.outputs]

    def close(self) -> None:
        self.request = None
        self.compiled = None


def load(path: Path, settings: Settings, device: str | None, threads: int) -> OpenVinoRunner:
    ov = require("openvino", path, KEY, INSTALL)
    if not path.is_file():
        raise ModelLoadError(path, "file not found" if not path.exists() else "not a file")
    core = ov.Core()
    device = device or "cpu"
    ov_device = "CPU" if device == "cpu" else device
    if ov_device.split(".")[0] not in (*core.available_devices, "AUTO", "MULTI", "HETERO"):
        raise ModelLoadError(
            path, f"OpenVINO has no device {ov_device!r} here (it has {', '.join(core.available_devices)})"
        )
    try:
        model = core.read_model(str(path))
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError with the parser's text
        raise ModelLoadError(path, f"not a loadable ONNX model ({type(exc).__name__}: {exc})") from None
    if len(model.inputs) != 1:
        raise ModelLoadError(path, f"expected one NCHW image input, got {[p.get_any_name() for p in model.inputs]}")
    # The precision is pinned: left to OpenVINO, the same model scores differently on different CPUs.
    config: dict[str, Any] = {"PERFORMANCE_HINT": settings.hint.upper(), "INFERENCE_PRECISION_HINT": settings.precision}
    if ov_device == "CPU":
        config["INFERENCE_NUM_THREADS"] = cpu_threads(threads)
    elif threads:
        # Only as asked: the other plugins (GPU, NPU) run on their own hardware and may refuse CPU threads.
        config["INFERENCE_NUM_THREADS"] = threads
    try:
        compiled = core.compile_model(model, ov_device, config)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(
            path, f"OpenVINO cannot compile it for {ov_device} ({type(exc).__name__}: {exc})"
        ) from None
    return OpenVinoRunner(compiled, device, _metadata(model))
