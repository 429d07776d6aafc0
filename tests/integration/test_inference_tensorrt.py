"""Native TensorRT on a GPU: an engine built from the shipped ONNX once per device, then read from the
cache; its defects match ONNX Runtime's. Skipped without tensorrt, cuda-python and a CUDA GPU."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from lineguard.samples import __file__ as samples_init
from lineguard.vision.backends.tensorrt import Settings
from lineguard.vision.detect import detect
from lineguard.vision.model import load_model

pytestmark = pytest.mark.gpu
trt = pytest.importorskip("tensorrt", reason="tensorrt is not installed (the tensorrt extra)")
cudart = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed (the tensorrt extra)")
_err, _count = cudart.cudaGetDeviceCount()
if _err != cudart.cudaError_t.cudaSuccess or _count == 0:
    pytest.skip("no CUDA GPU here", allow_module_level=True)

BOARD = Path(samples_init).parent / "deeppcb" / "00041000_test.jpg"


def iou(a, b) -> float:
    """Of two x1 y1 x2 y2 boxes."""
    (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = (float(v) for v in a), (float(v) for v in b)
    w = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    h = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = w * h
    return inter / ((ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter)


def test_an_engine_is_built_once_per_device_and_then_read_from_the_cache(tmp_path: Path) -> None:
    settings = Settings(engine_cache_dir=str(tmp_path), max_batch=4)
    first = load_model(backend=settings, device="cuda")
    assert first.runner.built and first.runner.engine_path.is_file()
    assert first.runner.engine_path.parent == tmp_path and f"trt{trt.__version__}" in first.runner.engine_path.name
    first.close()
    second = load_model(backend=settings)  # no device: tensorrt's default, cuda (GPU 0)
    assert second.runner.device == "cuda"
    assert not second.runner.built and second.runner.engine_path == first.runner.engine_path
    assert len(list(tmp_path.glob("*.engine"))) == 1
    second.close()


def test_a_corrupt_cached_engine_is_rebuilt(tmp_path: Path) -> None:
    settings = Settings(engine_cache_dir=str(tmp_path))
    detector = load_model(backend=settings, device="cuda")
    path = detector.runner.engine_path
    detector.close()
    path.write_bytes(b"not an engine")
    again = load_model(backend=settings, device="cuda")
    assert again.runner.built and path.stat().st_size > 1000
    again.close()


def test_tensorrt_finds_what_onnxruntime_finds(tmp_path: Path) -> None:
    image, template = cv2.imread(str(BOARD)), cv2.imread(str(BOARD).replace("_test.jpg", "_temp.jpg"))
    engine = load_model(backend=Settings(engine_cache_dir=str(tmp_path)), device="cuda")
    on_onnxruntime = load_model(intra_op_threads=2)
    on_gpu = detect(engine, image, conf_threshold=0.1, iou_threshold=0.45, reference=template).detections
    on_cpu = detect(on_onnxruntime, image, conf_threshold=0.1, iou_threshold=0.45, reference=template).detections
    assert on_cpu
    # Scores near the threshold may fall either side of it; the confident defects must match.
    confident = on_cpu[on_cpu.confidence >= 0.15]
    for k in range(len(confident)):
        want_box, want_class, want_score = confident.xyxy[k], confident.class_id[k], float(confident.confidence[k])
        best = max(
            range(len(on_gpu)), key=lambda g: iou(on_gpu.xyxy[g], want_box) if on_gpu.class_id[g] == want_class else 0.0
        )
        assert on_gpu.class_id[best] == want_class and iou(on_gpu.xyxy[best], want_box) >= 0.95
        assert float(on_gpu.confidence[best]) == pytest.approx(want_score, abs=0.02)
    engine.close()
