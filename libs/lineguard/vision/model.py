"""Load a YOLO11 detection or segmentation model exported to ONNX and run it on a backend
(ONNX Runtime by default; TensorRT, OpenVINO: lineguard.vision.backends).

What the model detects comes from its model card, `<name>.json` beside `<name>.onnx`
(written by lineguard.modelops.train); without a card, from the metadata Ultralytics
writes into the ONNX file (`names`, `imgsz`, `task`). Anything that does not add up is a
ModelLoadError naming the file and the cause, raised at load time, not at the first frame."""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from lineguard.vision.backends import Runner, load_runner
from lineguard.hashing import file_sha256
from lineguard.vision.errors import BackendUnavailable, ModelLoadError
from lineguard.vision.paired import INPUT_MODES

PACKAGED_MODEL = "deeppcb-yolo11n.onnx"
TASKS = ("detect", "segment")

__all__ = ["BackendUnavailable", "ModelCard", "ModelLoadError", "Detector", "load_model", "packaged_model_path"]


@dataclass(frozen=True)
class ModelCard:
    model_id: str
    version: str
    classes: tuple[str, ...]
    input_size: int
    task: str = "detect"          # "detect" or "segment"
    mask_channels: int = 0        # segment: prototype masks (32 for YOLO11-seg)
    input_mode: str = "image"     # "paired": the image beside its reference (lineguard.vision.paired)
    scaleup: bool = True          # False: an image smaller than the input is padded, never enlarged


def packaged_model_path() -> Path:
    """The placeholder model shipped in the package (trained briefly on DeepPCB)."""
    return Path(str(files("lineguard.vision.models") / PACKAGED_MODEL))


def card_path(model_path: Path) -> Path:
    """The model card beside a model file: `<name>.json` for an ONNX file, `<name>.engine.json` for a
    TensorRT engine (which shares its ONNX's stem, so the two cards must not share a name)."""
    model_path = Path(model_path)
    return model_path.with_suffix(".engine.json" if model_path.suffix == ".engine" else ".json")


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
    return file_sha256(path)[:12]


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
    task = str(card.get("task") or meta.get("task") or "detect")
    if task not in TASKS:
        raise ModelLoadError(path, f"task {task!r} is not one lineguard runs ({', '.join(TASKS)})")
    input_mode = str((card.get("input") or {}).get("mode") or meta.get("lineguard_input_mode") or "image")
    if input_mode not in INPUT_MODES:
        raise ModelLoadError(path, f"input mode {input_mode!r} is not one lineguard runs ({', '.join(INPUT_MODES)})")
    return ModelCard(
        model_id=model_id or str(card.get("model_id") or path.stem),
        # Without a card the file's own hash is the version: a record still names exactly which model judged it.
        version=version or str(card.get("version") or f"sha256:{_short_sha256(path)}"),
        classes=classes,
        input_size=size,
        task=task,
        input_mode=input_mode,
        scaleup=bool((card.get("input") or {}).get("scaleup", meta.get("lineguard_scaleup", "true") == "true")),
    )


class Detector:
    """One loaded detection / segmentation model, the backend running it, and what its card says it detects."""

    def __init__(self, path: Path, runner: Runner, card: ModelCard):
        self.path = path
        self.runner = runner
        self.card = card

    @property
    def max_batch(self) -> int | None:
        """The most images one run takes (a fixed-batch export, an engine's profile), None for any."""
        return self.runner.input.fixed_batch or getattr(self.runner, "max_batch", None)

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """(1, 3, S, S) float32 -> the first output, (1, 4 + classes [+ masks], anchors)."""
        return self.run_batch(tensor)[0]

    def run_batch(self, batch: np.ndarray) -> list[np.ndarray]:
        """(N, 3, S, S) float32 -> every output with N first; runs in pieces a fixed-batch model takes."""
        batch = batch.astype(self.runner.input.dtype, copy=False)
        step = self.max_batch or len(batch)
        if len(batch) <= step:
            return [np.asarray(o, dtype=np.float32) for o in self.runner.run(batch)]
        pieces = [self.runner.run(batch[i:i + step]) for i in range(0, len(batch), step)]
        return [np.concatenate([np.asarray(p[k], dtype=np.float32) for p in pieces]) for k in range(len(pieces[0]))]

    def close(self) -> None:
        self.runner.close()


def load_model(path: str | Path | None = None, *, intra_op_threads: int = 0, model_id: str | None = None,
               version: str | None = None, backend: str = "onnxruntime", device: str = "cpu",
               providers: list[str] | None = None, backend_options: Mapping[str, Any] | None = None) -> Detector:
    """Load `path` (default: the packaged model) on `backend`; raises ModelLoadError with the cause.

    `backend_options` are the chosen backend's own (lineguard.vision.backends.<backend>.Options)."""
    path = Path(path) if path is not None else packaged_model_path()
    if not path.is_file():
        raise ModelLoadError(path, "file not found" if not path.exists() else "not a file")
    card_json = read_card(path)
    options: dict[str, Any] = {"device": device, "threads": intra_op_threads, **(backend_options or {})}
    if providers:
        options["providers"] = providers
    if backend == "tensorrt" and "input_size" not in options:
        # An engine for an ONNX with open height / width needs the side the card gives.
        size = ((card_json or {}).get("input") or {}).get("width")
        if size:
            options["input_size"] = int(size)
    runner = load_runner(path, backend, options)
    try:
        meta = runner.metadata or (onnx_metadata(path) if not card_json else {})
        card = describe(path, card_json, meta, model_id=model_id, version=version)
        card = _check_shapes(path, runner, card)
    except BaseException:
        runner.close()
        raise
    return Detector(path, runner, card)


def onnx_metadata(path: Path) -> dict[str, str]:
    """The ONNX file's metadata_props (Ultralytics writes names, imgsz, task there), read with ONNX Runtime."""
    import onnxruntime as ort  # a base dependency; only needed where a backend does not expose metadata

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - the backend loaded it; without metadata the card must say it all
        return {}
    return dict(session.get_modelmeta().custom_metadata_map)


def _check_shapes(path: Path, runner: Runner, card: ModelCard) -> ModelCard:
    """Input and outputs agree with the card; one run on a blank image proves it (and warms the model up).

    Returns the card with what the outputs tell (the number of mask channels of a segmentation model)."""
    shape = runner.input.shape
    if len(shape) != 4:
        raise ModelLoadError(path, f"expected one NCHW image input, got {[(runner.input.name, list(shape))]}")
    batch, channels, height, width = shape
    if batch is not None and batch != 1:
        # A lone frame is a batch of one: a model fixed at N > 1 would take the blank test run below and
        # then refuse every real frame.
        raise ModelLoadError(path, f"input batch is fixed at {batch}; export with batch 1 or a dynamic batch axis")
    if channels is not None and channels != 3:
        raise ModelLoadError(path, f"input has {channels} channels, expected 3")
    for side in (height, width):
        if side is not None and side != card.input_size:
            raise ModelLoadError(path, f"input is {height}x{width} but the card says {card.input_size}")
    blank = np.zeros((batch or 1, 3, card.input_size, card.input_size), runner.input.dtype)
    try:
        outputs = runner.run(blank)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(path, f"a test run on a blank image failed ({type(exc).__name__}: {exc})") from None
    output = outputs[0]
    if card.task == "segment":
        if len(outputs) < 2 or outputs[1].ndim != 4:
            raise ModelLoadError(path, f"a segmentation model needs a second output of prototype masks "
                                       f"(N, masks, h, w); got {[o.shape for o in outputs]}")
        card = replace(card, mask_channels=int(outputs[1].shape[1]))
    if output.ndim != 3 or output.shape[0] != len(blank):
        expected = "(1, 4 + classes + masks, anchors)" if card.task == "segment" else "(1, 4 + classes, anchors)"
        raise ModelLoadError(path, f"output has shape {output.shape}; expected {expected}: "
                                   f"a {card.task} model exported without NMS")
    rows = output.shape[1]
    if rows != 4 + len(card.classes) + card.mask_channels:
        masks = f" + {card.mask_channels} mask coefficients" if card.mask_channels else ""
        raise ModelLoadError(path, f"output has {rows} rows = 4 box{masks} + {rows - 4 - card.mask_channels} "
                                   f"class scores, but the card / metadata names {len(card.classes)} classes "
                                   f"{list(card.classes)}")
    return card
