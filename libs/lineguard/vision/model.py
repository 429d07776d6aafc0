"""Load a YOLO11 detection model exported to ONNX and run it on ONNX Runtime's CPU provider.

What the model detects comes from its model card, `<name>.json` beside `<name>.onnx`
(written by lineguard.modelops.train); without a card, from the metadata Ultralytics
writes into the ONNX file (`names`, `imgsz`). Anything that does not add up is a
ModelLoadError naming the file and the cause, raised at load time, not at the first frame."""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

PACKAGED_MODEL = "deeppcb-yolo11n.onnx"


class ModelLoadError(RuntimeError):
    """The model file cannot be used; the message names the file and the cause."""

    def __init__(self, path: Path | str, cause: str):
        super().__init__(f"model {path}: {cause}")
        self.path = Path(path)
        self.cause = cause


@dataclass(frozen=True)
class ModelCard:
    model_id: str
    version: str
    classes: tuple[str, ...]
    input_size: int


def packaged_model_path() -> Path:
    """The placeholder model shipped in the package (trained briefly on DeepPCB)."""
    return Path(str(files("lineguard.vision.models") / PACKAGED_MODEL))


def card_path(model_path: Path) -> Path:
    return Path(model_path).with_suffix(".json")


def read_card(model_path: Path) -> dict[str, Any] | None:
    """The model card beside model_path, or None when there is none."""
    path = card_path(model_path)
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(model_path, f"model card {path.name} is not valid JSON ({exc})") from None
    if not isinstance(card, dict):
        raise ModelLoadError(model_path, f"model card {path.name} is not a JSON object")
    return card


def _names_from_metadata(meta: dict[str, str]) -> tuple[str, ...] | None:
    raw = meta.get("names")
    if not raw:
        return None
    names = ast.literal_eval(raw)  # Ultralytics writes str({0: 'open', ...})
    if isinstance(names, dict):
        return tuple(str(names[i]) for i in sorted(names))
    return tuple(str(n) for n in names)


def _size_from_metadata(meta: dict[str, str]) -> int | None:
    raw = meta.get("imgsz")
    if not raw:
        return None
    size = ast.literal_eval(raw)  # "[640, 640]"
    if isinstance(size, list | tuple):
        if len(set(size)) != 1:
            raise ValueError(f"non-square input {size}")
        size = size[0]
    return int(size)


def _short_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def describe(path: Path, card: dict[str, Any] | None, meta: dict[str, str], *, model_id: str | None,
             version: str | None) -> ModelCard:
    """What the model is: the card first, Ultralytics' metadata second; settings override id and version."""
    try:
        classes = tuple(card["classes"]) if card and "classes" in card else _names_from_metadata(meta)
        size_from_card = (card or {}).get("input", {}).get("width")
        size = int(size_from_card) if size_from_card else _size_from_metadata(meta)
    except (ValueError, SyntaxError, TypeError, AttributeError, KeyError) as exc:
        raise ModelLoadError(path, f"cannot read class names / input size from its card or metadata ({exc})") from None
    if not classes:
        raise ModelLoadError(path, f"no class names: neither a model card {card_path(path).name} with 'classes' "
                                   "nor Ultralytics 'names' metadata in the file")
    if not size:
        raise ModelLoadError(path, "no input size: neither the card's input.width nor Ultralytics 'imgsz' metadata")
    card = card or {}
    return ModelCard(
        model_id=model_id or str(card.get("model_id") or path.stem),
        # Without a card the file's own hash is the version: a record still names exactly which model judged it.
        version=version or str(card.get("version") or f"sha256:{_short_sha256(path)}"),
        classes=classes,
        input_size=size,
    )


class OnnxDetector:
    """One loaded ONNX detection model and what its card says it detects."""

    def __init__(self, path: Path, session: Any, card: ModelCard):
        self.path = path
        self.session = session
        self.card = card
        self.input_name = session.get_inputs()[0].name

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """(1, 3, S, S) float32 -> (1, 4 + classes, anchors)."""
        return self.session.run(None, {self.input_name: tensor})[0]


def load_model(path: str | Path | None = None, *, intra_op_threads: int = 0, model_id: str | None = None,
               version: str | None = None) -> OnnxDetector:
    """Load `path` (default: the packaged model) on the CPU; raises ModelLoadError with the cause."""
    import onnxruntime as ort  # heavy: only where a model is loaded

    path = Path(path) if path is not None else packaged_model_path()
    if not path.is_file():
        raise ModelLoadError(path, "file not found" if not path.exists() else "not a file")
    options = ort.SessionOptions()
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise ModelLoadError(path, f"not a loadable ONNX model ({type(exc).__name__}: {exc})") from None
    meta = dict(session.get_modelmeta().custom_metadata_map)
    card = describe(path, read_card(path), meta, model_id=model_id, version=version)
    _check_shapes(path, session, card)
    return OnnxDetector(path, session, card)


def _check_shapes(path: Path, session: Any, card: ModelCard) -> None:
    """Input and output agree with the card; one run on a blank image proves it (and warms the session up)."""
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise ModelLoadError(path, f"expected one NCHW image input, got {[(i.name, i.shape) for i in inputs]}")
    _, channels, height, width = inputs[0].shape
    if isinstance(channels, int) and channels != 3:
        raise ModelLoadError(path, f"input has {channels} channels, expected 3")
    for side in (height, width):
        if isinstance(side, int) and side != card.input_size:
            raise ModelLoadError(path, f"input is {height}x{width} but the card says {card.input_size}")
    blank = np.zeros((1, 3, card.input_size, card.input_size), np.float32)
    try:
        output = session.run(None, {inputs[0].name: blank})[0]
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(path, f"a test run on a blank image failed ({type(exc).__name__}: {exc})") from None
    if output.ndim != 3 or output.shape[0] != 1:
        raise ModelLoadError(path, f"output has shape {output.shape}; expected (1, 4 + classes, anchors): "
                                   "a detection model exported without NMS")
    rows = output.shape[1]
    if rows != 4 + len(card.classes):
        raise ModelLoadError(path, f"output has {rows} rows = 4 box + {rows - 4} class scores, "
                                   f"but the card / metadata names {len(card.classes)} classes {list(card.classes)}")
