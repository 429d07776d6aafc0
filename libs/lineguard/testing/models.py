"""Model files for tests: a YOLO-shaped ONNX small enough to build in a test, whose output is known, and the
packaged model under other versions (a broken file, renamed classes) for the registry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lineguard.hashing import file_sha256
from lineguard.vision.model import packaged_model_path

SIDE = 32
MODEL_ID = "deeppcb-yolo11n"


def tiny_model(
    path: Path, *, batch: int | str, segment: bool = False, scores: tuple[float, float] = (0.05, 0.9)
) -> Path:
    """A YOLO-shaped ONNX of a few convolutions, with a card: 2 classes, 16 anchors on a 32 px input.

    Every anchor says: box cx, cy, w, h = 16, 16, 8, 8, class 1 at 0.9; a -seg model adds 2 mask
    coefficients (10, 0) and prototypes whose channel 0 is 5 everywhere (a mask filling the box)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    rows = 4 + 2 + (2 if segment else 0)
    # Tiny weights on the image, biases that fix each row's value: an answer that is known, and an input
    # that still flows through the graph (so a batch of different images gives different outputs).
    w = (rng.standard_normal((rows, 3, 8, 8)) * 1e-4).astype(np.float32)
    b = np.array([16, 16, 8, 8, *scores] + ([10, 0] if segment else []), np.float32)
    nodes = [
        helper.make_node("Conv", ["images", "w", "b"], ["grid"], strides=[8, 8]),
        helper.make_node("Reshape", ["grid", "shape"], ["output0"]),
    ]
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(b, "b"),
        numpy_helper.from_array(np.array([0, rows, -1], np.int64), "shape"),
    ]
    outputs = [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch, rows, 16])]
    if segment:
        nodes.append(helper.make_node("Conv", ["images", "pw", "pb"], ["output1"], strides=[4, 4]))
        inits += [
            numpy_helper.from_array(np.zeros((2, 3, 4, 4), np.float32), "pw"),
            numpy_helper.from_array(np.array([5, 0], np.float32), "pb"),
        ]
        outputs.append(helper.make_tensor_value_info("output1", TensorProto.FLOAT, [batch, 2, 8, 8]))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, SIDE, SIDE])],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    card = {
        "model_id": "tiny",
        "version": "1",
        "classes": ["open", "short"],
        "input": {"width": SIDE},
        "task": "segment" if segment else "detect",
    }
    path.with_suffix(".json").write_text(json.dumps(card))
    return path


def model_version(folder: Path, version: str, *, data: bytes | None = None, **card: Any) -> Path:
    """`folder/<version>/model.onnx` + its card: the packaged model (or `data`) as `version`."""
    source = packaged_model_path()
    path = folder / version / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    if data is None:
        shutil.copyfile(source, path)
    else:
        path.write_bytes(data)
    values = json.loads(source.with_suffix(".json").read_text())
    values.update(version=version, onnx_sha256=file_sha256(path), onnx_bytes=path.stat().st_size, **card)
    path.with_suffix(".json").write_text(json.dumps(values, indent=2))
    return path
