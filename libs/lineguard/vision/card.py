"""The model card: what a model file is, written beside it as `<name>.json` (`<name>.engine.json` for a
TensorRT engine).

`ModelCard` is the one reading of it: lineguard.modelops.export writes it, the vision runtime
(lineguard.vision.model) takes from it what the model detects and how it is fed, the registry
stores it beside the file, and the loader checks the file against its sha256 and the card's signature
(lineguard.vision.signing). A card that does not validate is a
ModelLoadError naming the file and the field.

What the runtime acts on is checked strictly: `model_id`, `version`, `classes` (in class-id order),
`task`, and `input` and `output`, which take no key they do not know (a misspelt `scaleup` would feed
the model wrongly and silently). The record of how the model was made (`dataset`, `training`,
`metrics`, `export`, `evaluation`) is typed as lineguard writes it, and keeps what it does not know
(a newer exporter's fields, a note added by hand): a card is written back with exactly the fields it
was read with, so reading and writing it changes nothing."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lineguard.vision.errors import ModelLoadError
from lineguard.vision.paired import INPUT_MODES

TASKS = ("detect", "segment")
_SHA256 = r"^[0-9a-f]{64}$"

__all__ = [
    "TASKS",
    "DatasetFacts",
    "Evaluation",
    "ExportFacts",
    "InputSpec",
    "Metrics",
    "ModelCard",
    "OutputSpec",
    "TrainingRecord",
    "TrainingStage",
    "card_input_size",
    "card_path",
]


def card_path(model_path: Path) -> Path:
    """The model card beside a model file: `<name>.json` for an ONNX file, `<name>.engine.json` for a
    TensorRT engine (which shares its ONNX's stem, so the two cards must not share a name)."""
    model_path = Path(model_path)
    return model_path.with_suffix(".engine.json" if model_path.suffix == ".engine" else ".json")


class _Checked(BaseModel):
    """What the runtime acts on: an unknown key is an error."""

    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)


class _Record(BaseModel):
    """How the model was made: typed where lineguard writes it, other keys kept as they are."""

    model_config = ConfigDict(extra="allow", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)


class InputSpec(_Checked):
    """The one NCHW image input, as the runtime builds it (lineguard.vision.preprocess, .paired)."""

    width: int = Field(gt=0, description="the square side the model runs at")
    height: int | None = Field(None, gt=0)
    channels: int = 3
    layout: str = "NCHW"
    dtype: str = Field("float32", description="what the exported file takes (float16 for a GPU FP16 export)")
    color: str = "RGB"
    scale: str = "1/255"
    resize: str = "letterbox"
    scaleup: bool = Field(True, description="False: an image smaller than the input is padded, never enlarged")
    pad_value: int = 114
    mode: str = Field("image", description="'paired': the image beside its reference (lineguard.vision.paired)")
    bgr_channels: tuple[str, ...] | None = Field(None, description="paired: what channels 0, 1, 2 hold (BGR order)")

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, mode: str) -> str:
        if mode not in INPUT_MODES:
            raise ValueError(f"input mode {mode!r} is not one lineguard runs ({', '.join(INPUT_MODES)})")
        return mode


class OutputSpec(_Checked):
    layout: str | None = Field(None, description="e.g. (1, 4 + classes, anchors)")
    box: str | None = None
    nms: bool = Field(False, description="lineguard runs NMS itself: exported without it")


class DatasetFacts(_Record):
    source: str | None = None
    labels_sha256: str | None = None
    data_yaml: str | None = None


class InitialWeights(_Record):
    """The weights a run continued from (their own card tells their training)."""

    path: str | None = None
    sha256: str | None = None
    loaded: bool | None = None


class TrainingStage(_Record):
    """One run of the weights' history; an ancestor whose record was not found has only weights / sha256."""

    run: str | None = None
    epochs: int | None = None
    wall_seconds: float | None = None
    machines: list[str] | None = None
    started: str | None = None
    metrics: dict[str, float] | None = None
    weights: str | None = None
    sha256: str | None = None
    record: str | None = None


class TrainingRecord(_Record):
    config: dict[str, Any] = Field(default_factory=dict, description="lineguard.modelops.train's TrainConfig")
    ultralytics_args: dict[str, Any] = Field(default_factory=dict)
    epochs_run: int | None = None
    epochs_planned: int | None = None
    status: str | None = None
    wall_seconds: float | None = None
    machine: str | None = None
    sessions: list[dict[str, Any]] = Field(default_factory=list, description="as the run record has them")
    initial_weights: InitialWeights | None = None
    history: list[TrainingStage] | None = Field(None, description="every run that made the weights, oldest first")
    total_epochs: int | None = None
    total_wall_seconds: float | None = None


class Metrics(_Record):
    """Ultralytics' validation figures when the weights were saved (lineguard.modelops.train.metrics_of)."""

    split: str | None = None
    precision: float | None = None
    recall: float | None = None
    map50: float | None = Field(None, alias="mAP50")
    map50_95: float | None = Field(None, alias="mAP50-95")
    mask_precision: float | None = None
    mask_recall: float | None = None
    mask_map50: float | None = Field(None, alias="mask_mAP50")
    mask_map50_95: float | None = Field(None, alias="mask_mAP50-95")
    map50_per_class: dict[str, float] | None = Field(None, alias="mAP50_per_class")


class ExportFacts(_Record):
    format: str | None = Field(None, description="onnx | tensorrt")
    precision: str | None = Field(None, description="fp32 | fp16")
    opset: int | None = None
    simplified: bool | None = None
    dynamic_batch: bool | None = None
    device: str | None = None
    weights: str | None = None
    weights_sha256: str | None = None
    versions: dict[str, str] = Field(default_factory=dict, description="python and the exporters' packages")
    # A TensorRT engine's: what it was built from and for.
    built_from: str | None = None
    onnx_sha256: str | None = None
    tensorrt: str | None = None
    gpu: str | None = None
    workspace_mib: int | None = None


class Evaluation(_Record):
    """The headline figures of `lineguard model eval --into-card` (lineguard.modelops.eval_report)."""

    command: str | None = None
    made: str | None = None
    data_yaml: str | None = None
    split: str | None = None
    split_labels_sha256: str | None = None
    images: int | None = None
    map50: float | None = Field(None, alias="mAP50")
    map50_95: float | None = Field(None, alias="mAP50-95")
    deeppcb_f: float | None = None
    deeppcb_precision: float | None = None
    deeppcb_recall: float | None = None
    conf: float | None = None
    escape_rate: float | None = None
    escapes: str | None = None
    false_reject_rate: float | None = None
    false_rejects: str | None = None


class ModelCard(_Record):
    """One model's card; the fields in the order the file has them."""

    model_id: str = Field(min_length=1)
    version: str = Field(min_length=1)
    description: str | None = None
    task: str = "detect"
    architecture: str | None = None
    classes: tuple[str, ...] = Field(min_length=1, description="in class-id order")
    input: InputSpec
    output: OutputSpec | None = None
    dataset: DatasetFacts | None = None
    training: TrainingRecord | None = None
    metrics: Metrics | None = None
    license: str | None = Field(None, description="the weights' licence as their trainer stamped it")
    export: ExportFacts | None = None
    onnx_sha256: str | None = Field(None, pattern=_SHA256, description="the ONNX file's (the registry checks it)")
    onnx_bytes: int | None = Field(None, ge=0)
    engine_sha256: str | None = Field(None, pattern=_SHA256)
    engine_bytes: int | None = Field(None, ge=0)
    evaluation: Evaluation | None = None
    signed_by: str | None = Field(None, description="the signer's key id (lineguard.vision.signing)")
    signature: str | None = Field(None, description="ed25519 over the card without this field, base64")

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str) -> str:
        if task not in TASKS:
            raise ValueError(f"task {task!r} is not one lineguard runs ({', '.join(TASKS)})")
        return task

    # What the runtime reads most, by the names it always had.
    @property
    def input_size(self) -> int:
        return self.input.width

    @property
    def input_mode(self) -> str:
        return self.input.mode

    @property
    def scaleup(self) -> bool:
        return self.input.scaleup

    # -- the file ---------------------------------------------------------------------------------

    @classmethod
    def validated(cls, data: Any, *, path: Path, what: str) -> ModelCard:
        """`data` (a JSON object) as a card; ModelLoadError(path, "<what>: <field>: <problem>; ...")."""
        if not isinstance(data, Mapping):
            raise ModelLoadError(path, f"{what} is not a JSON object")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ModelLoadError(path, f"{what}: {field_problems(exc)}") from None

    @classmethod
    def read(cls, path: Path, *, model: Path | None = None) -> ModelCard:
        """The card in the file `path`; a ModelLoadError names the model (`model`, else the card file)."""
        return cls.validated(read_json(path, model=model), path=model or path, what=f"model card {path.name}")

    @classmethod
    def beside(cls, model_path: Path) -> ModelCard | None:
        """The card beside a model file, or None when it has none."""
        path = card_path(model_path)
        return cls.read(path, model=Path(model_path)) if path.is_file() else None

    def to_json(self) -> str:
        """The card as its file holds it: the fields it was made or read with, in their order."""
        return json.dumps(self.model_dump(mode="json", exclude_unset=True), indent=2) + "\n"

    def write(self, path: Path) -> Path:
        Path(path).write_text(self.to_json())
        return Path(path)

    def write_beside(self, model_path: Path) -> Path:
        """Write the card as `model_path`'s (card_path); returns where."""
        return self.write(card_path(model_path))


def read_json(path: Path, *, model: Path | None = None) -> dict[str, Any]:
    """A card file's JSON object, before it is validated (the runtime fills what it lacks from the model's
    own metadata); a ModelLoadError names the model (`model`, else the card file)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(model or path, f"model card {Path(path).name} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ModelLoadError(model or path, f"model card {Path(path).name} is not a JSON object")
    return data


def card_input_size(model_path: Path) -> int | None:
    """The input side the card beside a model gives, if it has a card that gives one. Read before the model is
    loaded (a TensorRT engine is built for it), when the card may still leave its classes to the file's
    metadata; the loader validates the card after."""
    path = card_path(model_path)
    inputs = read_json(path, model=Path(model_path)).get("input") if path.is_file() else None
    width = inputs.get("width") if isinstance(inputs, dict) else None
    return width if isinstance(width, int) and width > 0 else None


def field_problems(exc: ValidationError) -> str:
    """pydantic's errors as `input.width: Input should be greater than 0; ...` (the field path first)."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '(card)'}: {e['msg']}" for e in exc.errors())
