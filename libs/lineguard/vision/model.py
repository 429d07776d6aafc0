"""Load a YOLO11 detection or segmentation model exported to ONNX and run it on a backend
(ONNX Runtime by default; TensorRT, OpenVINO: lineguard.vision.backends).

What the model detects comes from its model card, `<name>.json` beside `<name>.onnx`
(lineguard.vision.card, written by lineguard.modelops.export); what the card leaves out, or
everything without a card, from the metadata Ultralytics writes into the ONNX file (`names`,
`imgsz`, `task`). Anything that does not add up is a ModelLoadError naming the file and the
cause, raised at load time, not at the first frame."""

from __future__ import annotations

import ast
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from lineguard.hashing import file_sha256
from lineguard.vision.backends import BackendSettings, Runner, load_runner
from lineguard.vision.card import ModelCard, card_path, read_json
from lineguard.vision.errors import BackendUnavailable, ModelLoadError
from lineguard.vision.signing import Trust, verify_card

PACKAGED_MODEL = "deeppcb-yolo11n.onnx"

__all__ = [
    "BackendUnavailable",
    "Detector",
    "ModelCard",
    "ModelLoadError",
    "card_path",
    "load_model",
    "packaged_model_path",
]


def packaged_model_path() -> Path:
    """The placeholder model shipped in the package (trained briefly on DeepPCB)."""
    return Path(str(files("lineguard.vision.models") / PACKAGED_MODEL))


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


def _from_metadata(path: Path, read: Callable[[], Any], missing: str) -> Any:
    try:
        value = read()
    except (ValueError, SyntaxError, TypeError) as exc:
        raise ModelLoadError(path, f"cannot read class names / input size from its card or metadata ({exc})") from None
    if not value:
        raise ModelLoadError(path, missing)
    return value


def describe(
    path: Path, card: dict[str, Any] | None, meta: dict[str, str], *, model_id: str | None, version: str | None
) -> ModelCard:
    """What the model is: its card (the JSON `card`), what it leaves out from Ultralytics' metadata, and without
    a card the file's stem as id and its hash as version; settings override id and version."""
    data = dict(card or {})
    if "classes" not in data:
        data["classes"] = _from_metadata(
            path,
            lambda: _names_from_metadata(meta),
            f"no class names: neither a model card {card_path(path).name} with "
            "'classes' nor Ultralytics 'names' metadata in the file",
        )
    inputs = data.get("input") or {}
    if isinstance(inputs, dict):  # anything else: the card's validation says what is wrong
        inputs = dict(inputs)
        if "width" not in inputs:
            inputs["width"] = _from_metadata(
                path,
                lambda: _size_from_metadata(meta),
                "no input size: neither the card's input.width nor Ultralytics 'imgsz' metadata",
            )
        if "mode" not in inputs and meta.get("lineguard_input_mode"):
            inputs["mode"] = meta["lineguard_input_mode"]
        if "scaleup" not in inputs and "lineguard_scaleup" in meta:
            inputs["scaleup"] = meta["lineguard_scaleup"] == "true"
    data["input"] = inputs
    data.setdefault("task", meta.get("task") or "detect")
    data["model_id"] = model_id or data.get("model_id") or path.stem
    # Without a card the file's own hash is the version: a record still names exactly which model judged it.
    data["version"] = version or data.get("version") or f"sha256:{_short_sha256(path)}"
    what = f"model card {card_path(path).name}" if card is not None else "its Ultralytics metadata"
    return ModelCard.validated(data, path=path, what=what)


class Detector:
    """One loaded detection / segmentation model, the backend running it, and what its card says it detects."""

    def __init__(self, path: Path, runner: Runner, card: ModelCard, mask_channels: int = 0):
        self.path = path
        self.runner = runner
        self.card = card
        self.mask_channels = mask_channels  # segment: prototype masks (32 for YOLO11-seg), from its outputs

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
        pieces = [self.runner.run(batch[i : i + step]) for i in range(0, len(batch), step)]
        return [np.concatenate([np.asarray(p[k], dtype=np.float32) for p in pieces]) for k in range(len(pieces[0]))]

    def close(self) -> None:
        self.runner.close()


def load_model(
    path: str | Path | None = None,
    *,
    backend: BackendSettings | str = "onnxruntime",
    device: str | None = None,
    intra_op_threads: int = 0,
    model_id: str | None = None,
    version: str | None = None,
    trust: Trust | None = None,
) -> Detector:
    """Load `path` (default: the packaged model) on `backend` (a backend's Settings, e.g. `model.backend` of the
    line's configuration, or a key for that backend's defaults) and `device` (None: the backend's default);
    raises ModelLoadError with the cause.

    The file must match the sha256 its card gives; with `trust` (the inference service's, from ModelSettings) the
    card must also be signed by a trusted key. Both are checked before the file is parsed."""
    path = Path(path) if path is not None else packaged_model_path()
    if not path.is_file():
        raise ModelLoadError(path, "file not found" if not path.exists() else "not a file")
    card_file = card_path(path)
    card = read_json(card_file, model=path) if card_file.is_file() else None
    signer = verify_card(path, card, trust) if trust is not None else None
    _check_sha256(path, card, signed=signer is not None)
    runner = load_runner(path, backend, device=device, threads=intra_op_threads)
    try:
        meta = runner.metadata or (onnx_metadata(path) if card is None else {})
        described = describe(path, card, meta, model_id=model_id, version=version)
        mask_channels = _check_shapes(path, runner, described)
    except BaseException:
        runner.close()
        raise
    return Detector(path, runner, described, mask_channels)


def _check_sha256(path: Path, card: dict[str, Any] | None, *, signed: bool) -> None:
    """The file is the one its card describes (a signature covers the card, so this makes it cover the weights)."""
    field = "engine_sha256" if path.suffix == ".engine" else "onnx_sha256"
    expected = (card or {}).get(field)
    if expected is None:
        if signed:
            raise ModelLoadError(path, f"its signed card gives no {field}: the signature would not cover the file")
        return
    actual = file_sha256(path)
    # A malformed value is left to the card's validation, which names the field.
    if actual != expected and isinstance(expected, str) and len(expected) == 64:
        raise ModelLoadError(
            path, f"sha256 is {actual} but its card's {field} is {expected}: the file is not the one the card describes"
        )


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


def _check_shapes(path: Path, runner: Runner, card: ModelCard) -> int:
    """Input and outputs agree with the card; one run on a blank image proves it (and warms the model up).

    Returns what the outputs tell: the number of mask channels of a segmentation model (0 for detection)."""
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
    mask_channels = 0
    if card.task == "segment":
        if len(outputs) < 2 or outputs[1].ndim != 4:
            raise ModelLoadError(
                path,
                f"a segmentation model needs a second output of prototype masks "
                f"(N, masks, h, w); got {[o.shape for o in outputs]}",
            )
        mask_channels = int(outputs[1].shape[1])
    if output.ndim != 3 or output.shape[0] != len(blank):
        expected = "(1, 4 + classes + masks, anchors)" if card.task == "segment" else "(1, 4 + classes, anchors)"
        raise ModelLoadError(
            path, f"output has shape {output.shape}; expected {expected}: a {card.task} model exported without NMS"
        )
    rows = output.shape[1]
    if rows != 4 + len(card.classes) + mask_channels:
        masks = f" + {mask_channels} mask coefficients" if mask_channels else ""
        raise ModelLoadError(
            path,
            f"output has {rows} rows = 4 box{masks} + {rows - 4 - mask_channels} "
            f"class scores, but the card / metadata names {len(card.classes)} classes "
            f"{list(card.classes)}",
        )
    return mask_channels
