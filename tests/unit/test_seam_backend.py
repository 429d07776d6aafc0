"""A model backend added from this test module, through the BACKENDS seam alone (no library file edited): its
own option is checked by the line's configuration with its field path, and the model runs on it frame to result.

The backend wraps ONNX Runtime with a graph-optimization level of its own choosing: a real runner, giving the
packaged model's outputs, that counts its runs."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import yaml
from pydantic import Field

from lineguard.config import BACKENDS, BackendSettings, ConfigError, LineConfig, ModelSettings, parse_config
from lineguard.services.inference.detect import infer_frame, load_configured_model
from lineguard.testing.boards import board_frame
from lineguard.vision.backends import TensorSpec
from lineguard.vision.errors import ModelLoadError
from lineguard.vision.model import load_model

# -- the backend: what a backend module declares -----------------------------------------------------------

KEY = "wrapped-ort"
INSTALL = "nothing beyond the base install (it wraps onnxruntime)"


class Settings(BackendSettings):
    kind: Literal["wrapped-ort"] = "wrapped-ort"
    optimization: Literal["all", "basic", "none"] = Field("all", description="ONNX Runtime's graph optimization")


class WrappedRunner:
    backend = KEY

    def __init__(self, session: Any, device: str, optimization: str):
        self.session = session
        self.device = device
        self.optimization = optimization
        self.runs = 0
        (node,) = session.get_inputs()
        self.input = TensorSpec(
            node.name, tuple(d if isinstance(d, int) else None for d in node.shape), np.dtype(np.float32)
        )
        self.outputs = tuple(
            TensorSpec(o.name, tuple(d if isinstance(d, int) else None for d in o.shape), np.dtype(np.float32))
            for o in session.get_outputs()
        )
        self.metadata = dict(session.get_modelmeta().custom_metadata_map)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        self.runs += 1
        return self.session.run([o.name for o in self.outputs], {self.input.name: batch})

    def close(self) -> None:
        self.session = None


def load(path: Path, settings: Settings, device: str | None, threads: int) -> WrappedRunner:
    import onnxruntime as ort

    if (device or "cpu") != "cpu":
        raise ModelLoadError(path, f"backend {KEY!r} runs on the CPU only, not {device!r}")
    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[settings.optimization]
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    return WrappedRunner(session, device or "cpu", settings.optimization)


# -- the tests ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def registered() -> Iterator[None]:
    BACKENDS.register(sys.modules[__name__])
    yield
    # The seam keeps what is registered for the process; this module's kind must not outlive its tests.
    BACKENDS.unregister(KEY)


def config_with(line_config_dict: Callable[..., dict[str, Any]], backend: Any) -> dict[str, Any]:
    return line_config_dict(model={"backend": backend, "intra_op_threads": 1})


def test_a_config_naming_the_backend_validates_its_own_options(line_config_dict: Callable[..., dict[str, Any]]) -> None:
    assert KEY in set(BACKENDS.keys())
    config = LineConfig(**config_with(line_config_dict, {"kind": KEY, "optimization": "basic"}))
    assert isinstance(config.model.backend, Settings) and config.model.backend.optimization == "basic"
    assert ModelSettings(backend=KEY).backend == Settings()  # the bare key: its defaults


def test_a_bad_option_of_the_backend_fails_validation_with_its_field_path(
    line_config_dict: Callable[..., dict[str, Any]],
) -> None:
    text = yaml.safe_dump(config_with(line_config_dict, {"kind": KEY, "optimization": "fastest"}), sort_keys=False)
    with pytest.raises(ConfigError) as err:
        parse_config(text, "line.yaml")
    [problem] = err.value.problems
    assert problem.path == "model.backend.optimization"
    assert problem.message.startswith("Input should be 'all', 'basic' or 'none'") and problem.line
    text = yaml.safe_dump(config_with(line_config_dict, {"kind": KEY, "providers": ["CPUExecutionProvider"]}))
    with pytest.raises(ConfigError, match=r"model\.backend\.providers: unknown field"):
        parse_config(text, "line.yaml")  # onnxruntime's option is not this backend's


def test_the_model_runs_a_frame_through_the_backend(line_config_dict: Callable[..., dict[str, Any]]) -> None:
    config = LineConfig(**config_with(line_config_dict, {"kind": KEY, "optimization": "basic"}))
    detector = load_configured_model(config.model)
    assert isinstance(detector.runner, WrappedRunner) and detector.runner.optimization == "basic"
    assert detector.runner.runs == 1  # the loader's test run on a blank image
    frame = board_frame(1, "00041000")
    result = infer_frame(frame, config, detector)
    assert detector.runner.runs == 2 and result.part == frame.part
    # The same packaged model on the built-in onnxruntime backend judges the frame alike.
    reference = infer_frame(frame, config, load_model(intra_op_threads=1))
    assert result.detections, "the board has defects"
    assert [d.class_name for d in result.detections] == [d.class_name for d in reference.detections]
    for ours, theirs in zip(result.detections, reference.detections, strict=True):
        assert ours.score == pytest.approx(theirs.score, abs=1e-3)
    detector.close()


def test_the_backend_refuses_a_device_it_does_not_run_on() -> None:
    with pytest.raises(ModelLoadError, match=r"backend 'wrapped-ort' runs on the CPU only, not 'cuda'"):
        load_model(backend=Settings(), device="cuda")
