"""Native TensorRT: an engine built from the ONNX file with TensorRT's own builder, cached per device.

Engines are specific to the GPU model and the TensorRT version, and building one takes
minutes, so each is built once and kept in `engine_cache_dir` under a name made of the
ONNX file's sha256, the GPU's name, the TensorRT version and the largest batch
(`engine_key`); the next start on the same device deserializes it in a second. Ultralytics'
own `.engine` files are not used: they start with a JSON metadata header that plain
TensorRT runtimes reject.

The engine runs in the ONNX file's own precision (TensorRT 11 builds strongly typed
networks only): for FP16, give it the FP16 ONNX export. The model's `device` is 'cuda:N';
without one, 'cuda' (GPU 0). GPU memory is managed with cuda-python (`cuda.bindings.runtime`);
both come with the `tensorrt` extra."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
import structlog
from pydantic import Field

from lineguard.config.seams import BackendSettings
from lineguard.hashing import file_sha256
from lineguard.vision.backends.base import TensorSpec, cuda_index, require
from lineguard.vision.cache import user_cache_dir
from lineguard.vision.card import card_input_size
from lineguard.vision.errors import BackendUnavailable, ModelLoadError

KEY = "tensorrt"
INSTALL = "the tensorrt and cuda-python packages (pip install 'lineguard[tensorrt]') and an NVIDIA GPU"

log = structlog.get_logger("lineguard.vision")


class Settings(BackendSettings):
    kind: Literal["tensorrt"] = "tensorrt"
    engine_cache_dir: str | None = Field(
        None, description="where built engines are kept; default $XDG_CACHE_HOME/lineguard/engines"
    )
    max_batch: int = Field(8, ge=1, description="the largest batch the engine takes (dynamic-batch ONNX only)")
    input_size: int | None = Field(
        None,
        gt=0,
        description="square input side, for an ONNX that leaves height / width open; "
        "the model card's input size when it has one",
    )
    workspace_mib: int = Field(1024, ge=16, description="scratch GPU memory the builder may use")


def engine_key(model_sha256: str, gpu_name: str, trt_version: str, max_batch: int) -> str:
    """The cache name of the engine for one model on one GPU model with one TensorRT version."""
    gpu = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-") or "gpu"
    return f"{model_sha256[:16]}-{gpu}-trt{trt_version}-b{max_batch}"


def _cudart(path: Path) -> Any:
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart as runtime  # older cuda-python
        except ImportError as exc:
            raise BackendUnavailable(path, KEY, INSTALL, f"cannot import cuda.bindings.runtime: {exc}") from None
    return runtime


def _call(cudart: Any, result: Any, what: str) -> Any:
    """cuda-python returns (error, value...); an error becomes a RuntimeError naming the call."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"{what} failed: {err}")
    return values[0] if len(values) == 1 else values


def gpu_name(cudart: Any, index: int) -> str:
    props = _call(cudart, cudart.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
    name = props.name
    return (name.split(b"\0")[0].decode() if isinstance(name, bytes) else str(name)).strip()


def build_engine(trt: Any, path: Path, logger: Any, settings: Settings) -> bytes:
    """Parse the ONNX and build a serialized engine; a batch-open input gets a profile up to max_batch."""
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        # Precision as the ONNX file says, on TensorRT 10 as on 11 (where it is the only mode).
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelLoadError(path, f"TensorRT's ONNX parser refused it: {errors}")
    if network.num_inputs != 1:
        raise ModelLoadError(path, f"expected one NCHW image input, got {network.num_inputs} inputs")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
    tensor = network.get_input(0)
    shape = tuple(tensor.shape)
    if len(shape) != 4:
        raise ModelLoadError(path, f"expected an NCHW input, got shape {shape}")
    if any(d < 0 for d in shape):
        if any(d < 0 for d in shape[2:]) and not settings.input_size:
            raise ModelLoadError(
                path,
                "the ONNX leaves the input height / width open and no input_size is known "
                "(give the model a card, or set the backend option input_size)",
            )
        side = settings.input_size
        low = [1 if shape[0] < 0 else shape[0], shape[1], *(side if d < 0 else d for d in shape[2:])]
        high = [settings.max_batch if shape[0] < 0 else shape[0], *low[1:]]
        profile = builder.create_optimization_profile()
        profile.set_shape(tensor.name, low, high, high)  # opt = max: batching is for throughput
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelLoadError(path, "TensorRT could not build an engine from it (its log above says why)")
    return bytes(serialized)


def _write_atomically(target: Path, data: bytes) -> None:
    # Two services starting at once may both build: each writes a whole file, the last rename wins.
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class TrtRunner:
    backend = KEY

    def __init__(self, trt: Any, cudart: Any, runtime: Any, engine: Any, device: str, engine_path: Path, built: bool):
        self.trt, self.cudart, self.runtime, self.engine = trt, cudart, runtime, engine
        self.device = device
        self.device_index = cuda_index(device)
        self.engine_path = engine_path
        self.built = built  # True when this load built the engine rather than reading the cache
        self.metadata: dict[str, str] = {}
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) != trt.TensorIOMode.INPUT]
        self.input = self._spec(inputs[0])
        self.outputs = tuple(self._spec(n) for n in outputs)
        # Buffers for the largest batch the engine takes, allocated once.
        if None in self.input.shape:
            largest = tuple(int(d) for d in engine.get_tensor_profile_shape(inputs[0], 0)[2])
        else:
            largest = tuple(d for d in self.input.shape if d is not None)  # every dimension fixed: the shape itself
        self.max_batch = int(largest[0])
        self.context.set_input_shape(self.input.name, largest)
        self.stream = _call(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.buffers: dict[str, int] = {}
        for spec in (self.input, *self.outputs):
            shape = largest if spec is self.input else tuple(self.context.get_tensor_shape(spec.name))
            nbytes = int(np.prod(shape)) * spec.dtype.itemsize
            self.buffers[spec.name] = _call(cudart, cudart.cudaMalloc(nbytes), "cudaMalloc")
            self.context.set_tensor_address(spec.name, int(self.buffers[spec.name]))

    def _spec(self, name: str) -> TensorSpec:
        shape = tuple(int(d) if d >= 0 else None for d in self.engine.get_tensor_shape(name))
        return TensorSpec(name, shape, np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name))))

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        cudart = self.cudart
        # The current device is per thread, and run() is called from the service's worker threads, not the
        # thread that loaded the engine: on any GPU but 0 the copies would otherwise go to the wrong one.
        _call(cudart, cudart.cudaSetDevice(self.device_index), f"cudaSetDevice({self.device_index})")
        batch = np.ascontiguousarray(batch, dtype=self.input.dtype)
        if batch.shape[0] > self.max_batch:
            raise ValueError(f"batch of {batch.shape[0]} exceeds the engine's largest batch {self.max_batch}")
        self.context.set_input_shape(self.input.name, batch.shape)
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _call(
            cudart,
            cudart.cudaMemcpyAsync(self.buffers[self.input.name], batch.ctypes.data, batch.nbytes, h2d, self.stream),
            "cudaMemcpyAsync",
        )
        results = [np.empty(tuple(self.context.get_tensor_shape(o.name)), o.dtype) for o in self.outputs]
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        for spec, host in zip(self.outputs, results, strict=True):
            _call(
                cudart,
                cudart.cudaMemcpyAsync(host.ctypes.data, self.buffers[spec.name], host.nbytes, d2h, self.stream),
                "cudaMemcpyAsync",
            )
        _call(cudart, cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return results

    def close(self) -> None:
        for pointer in self.buffers.values():
            self.cudart.cudaFree(pointer)
        self.buffers = {}
        if self.stream is not None:
            self.cudart.cudaStreamDestroy(self.stream)
            self.stream = None
        self.context = self.engine = None


def load(path: Path, settings: Settings, device: str | None, threads: int) -> TrtRunner:
    trt = require("tensorrt", path, KEY, INSTALL)
    cudart = _cudart(path)
    if not path.is_file():
        raise ModelLoadError(path, "file not found" if not path.exists() else "not a file")
    device = device or "cuda"  # GPU 0; `threads` is for CPU backends, TensorRT runs on the GPU
    if settings.input_size is None:
        # An engine for an ONNX with open height / width needs the side its card gives.
        settings = settings.model_copy(update={"input_size": card_input_size(path)})
    try:
        index = cuda_index(device)
        _call(cudart, cudart.cudaSetDevice(index), f"cudaSetDevice({index})")
        gpu = gpu_name(cudart, index)
    except (ValueError, RuntimeError) as exc:
        raise ModelLoadError(path, f"TensorRT needs a CUDA GPU: {exc}") from None
    cache_dir = Path(settings.engine_cache_dir) if settings.engine_cache_dir else user_cache_dir("engines")
    engine_path = cache_dir / f"{engine_key(file_sha256(path), gpu, trt.__version__, settings.max_batch)}.engine"
    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)
    engine, built = None, False
    if engine_path.is_file():
        engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if engine is None:
            log.warning("cached TensorRT engine does not load; rebuilding", engine=str(engine_path))
    if engine is None:
        log.info(
            "building a TensorRT engine (once per model, GPU and TensorRT version)",
            model=str(path),
            gpu=gpu,
            tensorrt=trt.__version__,
            engine=str(engine_path),
        )
        data = build_engine(trt, path, logger, settings)
        _write_atomically(engine_path, data)
        engine, built = runtime.deserialize_cuda_engine(data), True
        if engine is None:
            raise ModelLoadError(path, "TensorRT built an engine it cannot load back")
    try:
        return TrtRunner(trt, cudart, runtime, engine, device, engine_path, built)
    except RuntimeError as exc:
        raise ModelLoadError(path, f"cannot set the engine up on {gpu}: {exc}") from None
