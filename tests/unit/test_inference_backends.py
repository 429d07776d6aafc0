"""Backends behind one interface: lazy imports, clear errors, ONNX Runtime and OpenVINO giving the same
answers, batches of any size on a dynamic-batch model and in pieces on a fixed one."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from lineguard.config import BackendSettings, ModelSettings
from lineguard.samples import __file__ as samples_init
from lineguard.testing.models import SIDE, tiny_model
from lineguard.vision.backends import BACKENDS, load_runner
from lineguard.vision.backends.base import cpu_threads
from lineguard.vision.backends.onnxruntime import Settings as OrtSettings
from lineguard.vision.backends.onnxruntime import providers_for
from lineguard.vision.backends.tensorrt import engine_key
from lineguard.vision.detect import detect
from lineguard.vision.errors import BackendUnavailable, ModelLoadError, ModelOutputError
from lineguard.vision.model import load_model, packaged_model_path

BOARD = Path(samples_init).parent / "deeppcb" / "00041000_test.jpg"
TEMPLATE = BOARD.with_name("00041000_temp.jpg")
HAVE_OPENVINO = importlib.util.find_spec("openvino") is not None
needs_openvino = pytest.mark.skipif(not HAVE_OPENVINO, reason="openvino is not installed (the openvino extra)")


def test_importing_the_runtime_library_imports_no_backend_runtime() -> None:
    code = (
        "import sys, lineguard.vision.model, lineguard.vision.detect, lineguard.vision.backends, "
        "lineguard.services.inference.service; "
        "print(sorted(m for m in ('tensorrt', 'openvino', 'onnxruntime', 'torch', 'ultralytics', 'cuda') "
        "if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_every_backend_declares_its_key_install_hint_and_options() -> None:
    assert {"onnxruntime", "tensorrt", "openvino"} <= set(BACKENDS.keys())  # the entry points
    for key in ("onnxruntime", "tensorrt", "openvino"):
        module = BACKENDS.module(key)
        assert key == module.KEY and module.INSTALL
        # every backend's settings extend the common ones, and a key alone gives its defaults
        assert issubclass(module.Settings, BackendSettings) and module.Settings().kind == key


def test_an_unknown_backend_is_named() -> None:
    with pytest.raises(
        ModelLoadError,
        match=r"unknown model backend 'tflite' \(known: onnxruntime, openvino, "
        r"tensorrt\)",
    ):
        load_model(backend="tflite")


def test_a_wrong_backend_option_is_named() -> None:
    # A backend's own options are its Settings: a wrong one is refused, with its field's path, when the line's
    # configuration is validated, not when the model loads.
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"backend\.hint\n  Input should be 'latency' or "):
        ModelSettings(backend={"kind": "openvino", "hint": "fastest"})
    with pytest.raises(ValidationError, match=r"backend\.engine_cache_dir\n  Extra inputs"):
        ModelSettings(backend={"kind": "onnxruntime", "engine_cache_dir": "/tmp"})
    with pytest.raises(ValidationError, match=r"backend\.max_batch\n  Input should be greater than or equal to 1"):
        ModelSettings(backend={"kind": "tensorrt", "max_batch": 0})


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_a_missing_tensorrt_says_what_to_install() -> None:
    with pytest.raises(
        BackendUnavailable,
        match=r"backend 'tensorrt' needs the tensorrt and cuda-python packages "
        r"\(pip install 'lineguard\[tensorrt\]'\)",
    ) as err:
        load_model(backend="tensorrt", device="cuda")
    assert err.value.path == packaged_model_path()


def test_a_missing_openvino_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # what a box without the openvino extra sees
    with pytest.raises(
        BackendUnavailable,
        match=r"backend 'openvino' needs the openvino package "
        r"\(pip install 'lineguard\[openvino\]'\) \(cannot import openvino",
    ):
        load_model(backend="openvino")


def test_onnxruntime_providers_follow_the_device() -> None:
    assert providers_for(OrtSettings(), "cpu") == ["CPUExecutionProvider"]
    assert providers_for(OrtSettings(), "cuda:1") == [
        ("CUDAExecutionProvider", {"device_id": 1}),
        "CPUExecutionProvider",
    ]
    assert providers_for(OrtSettings(providers=["CPUExecutionProvider"]), "cuda") == ["CPUExecutionProvider"]
    with pytest.raises(ModelLoadError, match=r"device 'gpu0' is not 'cuda' or 'cuda:N'; onnxruntime runs on"):
        load_model(device="gpu0")


def test_cuda_without_onnxruntime_gpu_is_an_error_not_a_silent_cpu_fallback() -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(ModelLoadError, match=r"has no CUDAExecutionProvider .*CUDA needs the onnxruntime-gpu package"):
        load_model(device="cuda")


def test_tensorrt_engines_are_keyed_by_model_gpu_and_version() -> None:
    key = engine_key("ab" * 32, "NVIDIA H100 80GB HBM3", "11.4.0.106", 8)
    assert key == "abababababababab-nvidia-h100-80gb-hbm3-trt11.4.0.106-b8"
    assert engine_key("ab" * 32, "NVIDIA L4", "11.4.0.106", 8) != key
    assert engine_key("ab" * 32, "NVIDIA H100 80GB HBM3", "10.13.0", 8) != key
    assert engine_key("cd" * 32, "NVIDIA H100 80GB HBM3", "11.4.0.106", 8) != key


@needs_openvino
def test_openvino_finds_what_onnxruntime_finds_on_a_sample_board() -> None:
    image, template = cv2.imread(str(BOARD)), cv2.imread(str(TEMPLATE))
    found = {}
    for backend in ("onnxruntime", "openvino"):
        detector = load_model(backend=backend, intra_op_threads=1)
        assert detector.runner.backend == backend and detector.card.model_id == "deeppcb-yolo11n"
        if backend == "openvino":
            # Pinned: on a CPU with AMX OpenVINO would otherwise run bf16 and move scores by ~0.02.
            assert detector.runner.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
        found[backend] = detect(detector, image, conf_threshold=0.05, iou_threshold=0.45, reference=template).detections
    assert found["onnxruntime"], "the board has defects above 0.05"
    ov, ort = found["openvino"], found["onnxruntime"]
    assert ov.class_id.tolist() == ort.class_id.tolist()
    for i in range(len(ort)):
        assert float(ov.confidence[i]) == pytest.approx(float(ort.confidence[i]), abs=2e-3)
        assert tuple(ov.xyxy[i].tolist()) == pytest.approx(tuple(ort.xyxy[i].tolist()), abs=0.5)


def test_zero_threads_is_half_the_cores_at_least_one_and_a_count_is_kept() -> None:
    assert [cpu_threads(0, cores) for cores in (1, 2, 3, 16)] == [1, 1, 1, 8]
    assert cpu_threads(3, cores=16) == 3


@needs_openvino
def test_openvino_runs_on_half_the_cores_when_threads_are_0(tmp_path: Path) -> None:
    # Left to itself OpenVINO takes every core, which the line's other processes need (docs/inference.md, threads).
    detector = load_model(tiny_model(tmp_path / "m.onnx", batch=1), backend="openvino", intra_op_threads=0)
    assert detector.runner.compiled.get_property("INFERENCE_NUM_THREADS") == cpu_threads(0)


@pytest.mark.parametrize("backend", ["onnxruntime", pytest.param("openvino", marks=needs_openvino)])
def test_a_dynamic_batch_runs_at_once_and_equals_single_runs(tmp_path: Path, backend: str) -> None:
    detector = load_model(tiny_model(tmp_path / "dyn.onnx", batch="batch"), backend=backend)
    assert detector.max_batch is None
    images = np.random.default_rng(1).random((3, 3, SIDE, SIDE), np.float32)
    [batched] = detector.run_batch(images)
    assert batched.shape == (3, 6, 16)
    singles = np.concatenate([detector.run_batch(images[i : i + 1])[0] for i in range(3)])
    np.testing.assert_allclose(batched, singles, rtol=1e-5, atol=1e-5)
    assert not np.allclose(batched[0], batched[1])  # different images, different outputs


def test_a_fixed_batch_model_runs_a_batch_in_pieces(tmp_path: Path) -> None:
    detector = load_model(tiny_model(tmp_path / "fixed.onnx", batch=1))
    assert detector.max_batch == 1
    images = np.random.default_rng(2).random((3, 3, SIDE, SIDE), np.float32)
    [batched] = detector.run_batch(images)
    singles = np.concatenate([detector.run_batch(images[i : i + 1])[0] for i in range(3)])
    np.testing.assert_array_equal(batched, singles)


def test_a_model_fixed_at_a_batch_above_one_is_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="input batch is fixed at 4; export with batch 1 or a dynamic batch axis"):
        load_model(tiny_model(tmp_path / "fixed4.onnx", batch=4))


@pytest.mark.parametrize("backend", ["onnxruntime", pytest.param("openvino", marks=needs_openvino)])
def test_a_segmentation_model_gives_each_defect_its_mask(tmp_path: Path, backend: str) -> None:
    detector = load_model(tiny_model(tmp_path / "seg.onnx", batch="batch", segment=True), backend=backend)
    assert (detector.card.task, detector.mask_channels) == ("segment", 2)
    det = detect(detector, np.zeros((SIDE, SIDE, 3), np.uint8), conf_threshold=0.5, iou_threshold=0.45).detections
    assert len(det) == 1 and det.polygon is not None and det.mask_px is not None
    assert (detector.card.classes[det.class_id[0]], *det.xyxy[0].tolist()) == ("short", 12, 12, 20, 20)
    assert det.mask_px[0] == 64 and det.area_px[0] == 64  # the mask fills its 8 x 8 box
    assert {(float(x), float(y)) for x, y in det.polygon[0]} == {(12, 12), (12, 19), (19, 19), (19, 12)}


def test_a_card_saying_segment_for_a_detection_model_is_refused(tmp_path: Path) -> None:
    path = tiny_model(tmp_path / "det.onnx", batch=1)
    card = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**card, "task": "segment"}))
    with pytest.raises(ModelLoadError, match=r"a segmentation model needs a second output of prototype masks"):
        load_model(path)


def test_load_runner_reports_the_input_it_takes(tmp_path: Path) -> None:
    runner = load_runner(tiny_model(tmp_path / "dyn.onnx", batch="batch"), "onnxruntime", threads=1)
    assert (runner.input.name, runner.input.shape, runner.input.dtype) == ("images", (None, 3, SIDE, SIDE), np.float32)
    assert [o.name for o in runner.outputs] == ["output0"] and runner.input.fixed_batch is None


def test_the_line_config_chooses_the_backend_and_refuses_an_unknown_one() -> None:
    from pydantic import ValidationError

    from lineguard.services.inference.detect import load_configured_model

    with pytest.raises(
        ValidationError,
        match=r"unknown model backend 'tflite' \(known: onnxruntime, openvino, "
        r"tensorrt",
    ):
        ModelSettings(backend="tflite")
    settings = ModelSettings(
        backend={"kind": "openvino", "hint": "latency"} if HAVE_OPENVINO else "onnxruntime", intra_op_threads=1
    )
    detector = load_configured_model(settings)
    assert detector.runner.backend == settings.backend.kind and detector.runner.device == "cpu"


def test_a_model_output_that_is_not_a_number_is_an_error_never_a_pass(tmp_path: Path) -> None:
    # NaN compares False with every threshold: read as scores it would drop every box and pass the part.
    detector = load_model(tiny_model(tmp_path / "nan.onnx", batch=1, scores=(float("nan"), 0.9)))
    with pytest.raises(
        ModelOutputError,
        match=r"model tiny 1 gave 16 values that are not numbers \(NaN / inf\) "
        r"for this image: it cannot be judged",
    ):
        detect(detector, np.zeros((SIDE, SIDE, 3), np.uint8), conf_threshold=0.25, iou_threshold=0.45)
