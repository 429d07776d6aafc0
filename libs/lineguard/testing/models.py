"""Model files for tests: a YOLO-shaped ONNX small enough to build in a test, whose output is known, and the
packaged model under other versions (a broken file, renamed classes) for the registry.

Their cards are signed with TEST_KEY, a key anyone can derive (never trust it outside tests): `trust_dir` writes a
folder of trusted keys holding its public half and the project's, which tests/conftest.py makes the tests' line
configs trust, so the signature check runs in every test as it does on a line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lineguard.hashing import file_sha256
from lineguard.vision.model import packaged_model_path
from lineguard.vision.signing import packaged_trusted_keys_dir, sign_card

SIDE = 32
MODEL_ID = "deeppcb-yolo11n"
TEST_KEY = Ed25519PrivateKey.from_private_bytes(b"lineguard tests only: not secret")


def trust_dir(folder: Path) -> Path:
    """`folder` holding the public keys tests trust: TEST_KEY's and the package's own."""
    folder.mkdir(parents=True, exist_ok=True)
    public = TEST_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (folder / "lineguard-tests.pub").write_bytes(public)
    for key in packaged_trusted_keys_dir().glob("*.pub"):
        (folder / key.name).write_bytes(key.read_bytes())
    return folder


def write_signed_card(model: Path, card: dict[str, Any], *, indent: int | None = None) -> Path:
    """The card beside `model`, with the file's sha256, signed with TEST_KEY."""
    card = {"onnx_sha256": file_sha256(model), **card}
    path = model.with_suffix(".json")
    path.write_text(json.dumps(sign_card(card, TEST_KEY), indent=indent))
    return path


def tiny_model(
    path: Path,
    *,
    batch: int | str,
    segment: bool = False,
    scores: tuple[float, ...] = (0.05, 0.9),
    classes: tuple[str, ...] = ("open", "short"),
    **card_values: Any,
) -> Path:
    """A YOLO-shaped ONNX of a few convolutions, with a card: 2 classes, 16 anchors on a 32 px input.

    Every anchor says: box cx, cy, w, h = 16, 16, 8, 8, class 1 at 0.9; a -seg model adds 2 mask
    coefficients (10, 0) and prototypes whose channel 0 is 5 everywhere (a mask filling the box).
    `classes` with one score each makes another class count; `card_values` replace the card's (model_id, ...)."""
    if len(scores) != len(classes):
        raise ValueError(f"one score per class: {len(scores)} scores for {len(classes)} classes")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    rows = 4 + len(classes) + (2 if segment else 0)
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
        "classes": list(classes),
        "input": {"width": SIDE},
        "task": "segment" if segment else "detect",
        **card_values,
    }
    write_signed_card(path, card)
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
    write_signed_card(path, values, indent=2)
    return path
