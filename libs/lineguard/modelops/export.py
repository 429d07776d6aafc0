"""Export trained weights (Ultralytics .pt) to ONNX (FP32, FP16) and a TensorRT engine, each with its model card.

The model card (`<name>.json` beside `<name>.onnx` / `<name>.engine`; lineguard.vision.card.ModelCard) is
what the runtime, the registry and a reader trust: classes, input size and dtype, task, dataset label hash,
training config, validation metrics, how long it trained and on what, exporter versions and the file's
sha256. `model_card` is the one place a card is made; the training record it reads is
lineguard.modelops.train's run folder."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lineguard.hashing import file_sha256
from lineguard.modelops.train import (
    CardInfo,
    metrics_of,
    offline_ultralytics,
    read_run_record,
    require_train_extra,
    versions,
)
from lineguard.vision.card import (
    DatasetFacts,
    ExportFacts,
    InputSpec,
    Metrics,
    ModelCard,
    OutputSpec,
    TrainingRecord,
    card_path,
)
from lineguard.vision.paired import PAIRED_CHANNELS
from lineguard.vision.signing import load_private_key, sign_card_file


class ExportError(RuntimeError):
    """The model cannot be exported as asked; the message names the file or the missing piece."""


@dataclass(frozen=True)
class ExportedModel:
    path: Path
    card: Path
    precision: str  # fp32 | fp16
    format: str  # onnx | tensorrt


def _run_dir_of(weights: Path) -> Path | None:
    return weights.parent.parent if weights.parent.name == "weights" else None


def training_facts(weights: Path, ckpt: dict[str, Any]) -> dict[str, Any]:
    """What the run folder (lineguard-run.json) or, failing that, the checkpoint says about the training."""
    run_dir = _run_dir_of(weights)
    record = read_run_record(run_dir) if run_dir else None
    train_args = dict(ckpt.get("train_args") or {})
    # The checkpoint's own metrics are those of the epoch it was saved at (best.pt: its best epoch).
    metrics = metrics_of(ckpt.get("train_metrics") or {})
    if record and record.get("metrics") and weights.name == record["metrics"].get("weights"):
        metrics = {k: v for k, v in record["metrics"].items() if k not in {"split", "weights"}}
    if run_dir and record:
        history = training_history(run_dir, record)
        this_run = history[-1]
        return {
            "config": record.get("config", {}),
            "ultralytics_args": record.get("ultralytics_args", {}),
            "labels_sha256": record.get("dataset", {}).get("labels_sha256"),
            "data_yaml": record.get("dataset", {}).get("data_yaml"),
            "epochs_done": record.get("epochs_done"),
            "epochs": record.get("epochs"),
            "status": record.get("status"),
            "wall_seconds": this_run["wall_seconds"],
            "machines": this_run["machines"],
            "sessions": record.get("sessions", []),
            "metrics": metrics,
            "initial_weights": record.get("initial_weights"),
            "history": history,
        }
    return {
        "config": {},
        "ultralytics_args": {
            k: train_args.get(k)
            for k in ("data", "imgsz", "epochs", "batch", "seed", "device", "hsv_h", "hsv_s", "hsv_v")
            if k in train_args
        },
        "labels_sha256": None,
        "data_yaml": train_args.get("data"),
        "epochs_done": int(ckpt.get("epoch", -1)) + 1 if ckpt.get("epoch", -1) >= 0 else None,
        "epochs": train_args.get("epochs"),
        "status": "unknown (no lineguard-run.json beside the weights)",
        "wall_seconds": None,
        "machines": [],
        "sessions": [],
        "metrics": metrics,
    }


def _stage(run_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    """One run of a model's history: how long, on what, and how far it got."""
    sessions = record.get("sessions", [])
    metrics = record.get("metrics") or {}
    return {
        "run": run_dir.name,
        "epochs": record.get("epochs_done"),
        "wall_seconds": record.get("wall_seconds", round(sum(s.get("wall_seconds", 0) for s in sessions), 1)),
        "machines": sorted({s["machine"] for s in sessions if s.get("machine")}),
        "started": sessions[0].get("started") if sessions else None,
        "metrics": {k: metrics[k] for k in ("mAP50", "mAP50-95") if k in metrics},
    }


def _ancestor(initial: dict[str, Any], beside: Path) -> Path | None:
    """The run folder whose weights a run started from: at the recorded path, or in a folder of the same name
    beside the run (the runs moved together, e.g. into the repository's training/), if the file still is them."""
    recorded = Path(initial.get("path", ""))
    for weights in (recorded, beside.parent / recorded.parent.parent.name / "weights" / recorded.name):
        run_dir = _run_dir_of(weights)
        if run_dir and weights.is_file() and file_sha256(weights) == initial.get("sha256"):
            return run_dir
    return None


def training_history(run_dir: Path, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Every run that made these weights, oldest first: a run continued from earlier weights is preceded by the
    run that trained them, as far back as the records go (an ancestor not found is named by its weights)."""
    stages = [_stage(run_dir, record)]
    seen = {run_dir.resolve()}
    while initial := record.get("initial_weights"):
        parent = _ancestor(initial, run_dir)
        parent_record = read_run_record(parent) if parent and parent.resolve() not in seen else None
        if parent is None or parent_record is None:
            stages.append({"weights": initial.get("path"), "sha256": initial.get("sha256"), "record": "not found"})
            break
        seen.add(parent.resolve())
        stages.append(_stage(parent, parent_record))
        run_dir, record = parent, parent_record
    return stages[::-1]


def input_mode_fields(mode: str) -> dict[str, Any]:
    """The card's word on what the input is: the part's image, or it beside its reference (vision.paired)."""
    if mode == "paired":
        # BGR channels 0, 1, 2 as the loader builds them; the model sees them reversed (RGB order).
        return {"mode": "paired", "bgr_channels": list(PAIRED_CHANNELS)}
    return {"mode": "image"}


def model_card(
    *,
    file: Path,
    precision: str,
    input_dtype: str,
    task: str,
    architecture: str,
    classes: list[str],
    imgsz: int,
    facts: dict[str, Any],
    info: CardInfo,
    export: dict[str, Any],
    input_mode: str = "image",
    scaleup: bool = True,
    license: str = "",
) -> ModelCard:
    """The card for one exported ONNX file; a TensorRT engine's card is its ONNX's card plus the engine's facts."""
    outputs = (
        "(1, 4 + classes, anchors)"
        if task == "detect"
        else "(1, 4 + classes + 32 mask coefficients, anchors) and prototypes (1, 32, S/4, S/4)"
    )
    history = facts.get("history", [])
    return ModelCard(
        model_id=info.model_id,
        version=info.version,
        description=info.description,
        task=task,
        architecture=architecture,
        classes=tuple(classes),
        input=InputSpec(
            width=imgsz,
            height=imgsz,
            channels=3,
            layout="NCHW",
            dtype=input_dtype,
            color="RGB",
            scale="1/255",
            resize="letterbox",
            scaleup=scaleup,
            pad_value=114,
            **input_mode_fields(input_mode),
        ),
        output=OutputSpec(layout=outputs, box="cx, cy, w, h in input pixels", nms=False),
        dataset=DatasetFacts(
            source=info.dataset_source, labels_sha256=facts["labels_sha256"], data_yaml=facts["data_yaml"]
        ),
        training=TrainingRecord(
            config=facts["config"],
            ultralytics_args=facts["ultralytics_args"],
            epochs_run=facts["epochs_done"],
            epochs_planned=facts["epochs"],
            status=facts["status"],
            wall_seconds=facts["wall_seconds"],
            machine=info.machine or "; ".join(facts["machines"]) or "unknown",
            sessions=facts["sessions"],
            # A run continued from earlier weights: which (their own card tells their training).
            **({"initial_weights": facts["initial_weights"]} if facts.get("initial_weights") else {}),
            # How long the weights trained in all, and on what, across the runs that continued each other.
            **(
                {
                    "history": history,
                    "total_epochs": sum(s.get("epochs") or 0 for s in history),
                    "total_wall_seconds": round(sum(s.get("wall_seconds") or 0 for s in history), 1),
                }
                if len(history) > 1
                else {}
            ),
        ),
        metrics=Metrics.model_validate({"split": "val", **facts["metrics"]}),
        # The weights' licence as their trainer stamped it: not lineguard's (Apache-2.0); README "Licences".
        license=license or "not stated by the exporter",
        export=ExportFacts.model_validate({"format": "onnx", "precision": precision, **export, "versions": versions()}),
        onnx_sha256=file_sha256(file),
        onnx_bytes=file.stat().st_size,
    )


@dataclass(frozen=True)
class OnnxFacts:
    """What an exported file declares, read back rather than assumed."""

    input_dtype: str
    opset: int
    license: str  # the exporter's licence stamp (Ultralytics: AGPL-3.0), "" when there is none


def _stamp_input(path: Path, mode: str, scaleup: bool) -> OnnxFacts:
    """What the input is, in the ONNX file's own metadata too (beside Ultralytics' names / imgsz), so a model
    that travels without its card is still fed right: a paired model fed the board alone finds nothing.
    Returns the file's facts for its card."""
    import onnx

    model = onnx.load(str(path))
    for key, value in (("lineguard_input_mode", mode), ("lineguard_scaleup", str(scaleup).lower())):
        entry = next((p for p in model.metadata_props if p.key == key), None) or model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    elem = model.graph.input[0].type.tensor_type.elem_type
    return OnnxFacts(
        input_dtype=onnx.helper.tensor_dtype_to_np_dtype(elem).name,
        opset=max(o.version for o in model.opset_import if o.domain in {"", "ai.onnx"}),
        license=next((p.value for p in model.metadata_props if p.key == "license"), ""),
    )


def _check_loads(path: Path, dtype: str, imgsz: int, batch: int = 1) -> None:
    """One run on ONNX Runtime's CPU provider with the declared input dtype: an FP16 file must still serve,
    and a dynamic-batch file must take a batch of more than one."""
    import numpy as np
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        session.run(None, {session.get_inputs()[0].name: np.zeros((batch, 3, imgsz, imgsz), dtype)})
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise ExportError(
            f"{path}: exported, but ONNX Runtime (CPU) cannot run it ({type(exc).__name__}: {exc})"
        ) from None


def export_onnx(
    weights: Path,
    out_dir: Path,
    *,
    name: str | None = None,
    imgsz: int | None = None,
    opset: int = 17,
    half: bool = False,
    device: str = "cpu",
    card: CardInfo | None = None,
    dynamic_batch: bool = True,
    scaleup: bool = True,
    signing_key: Path | None = None,
) -> list[ExportedModel]:
    """weights -> out_dir/<name>.onnx (FP32) and, with half, out_dir/<name>-fp16.onnx, each with its card.

    Exports from a copy of the weights so the run folder stays as training left it. On the CPU the FP16 file
    keeps float32 input / output with casts inside (Ultralytics' CPU conversion); exported on a GPU it takes
    float16 input; the card's input.dtype says which. With dynamic_batch (the default) the batch axis is
    dynamic, so the inference service can micro-batch frames (model.batch_size). Without scaleup the card tells
    the service to pad an image smaller than the input rather than enlarge it. With signing_key (an ed25519
    private key, `lineguard model keygen`) each card is signed (lineguard.vision.signing)."""
    require_train_extra()
    weights, out_dir = Path(weights).resolve(), Path(out_dir)
    if not weights.is_file():
        raise ExportError(f"{weights}: weights file not found")
    run_dir = _run_dir_of(weights)
    name = name or (run_dir.name if run_dir else weights.stem)
    info = card or CardInfo(model_id=name, version="0.1.0")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lineguard-export-") as tmp:
        offline_ultralytics(Path(tmp))
        from ultralytics import YOLO

        copy = Path(tmp) / weights.name
        shutil.copyfile(weights, copy)
        model = YOLO(str(copy))
        task = model.task
        if task is None:  # Ultralytics guesses one for every checkpoint it loads: this is its types' None
            raise ExportError(f"{weights}: the checkpoint names no task (detect or segment)")
        ckpt = model.ckpt or {}
        facts = training_facts(weights, ckpt)
        size = int(imgsz or (ckpt.get("train_args") or {}).get("imgsz") or 640)
        classes = [model.names[i] for i in sorted(model.names)]
        # The network's own YAML first: a run continued from earlier weights names a .pt as its model.
        architecture = str(
            (getattr(model.model, "yaml", None) or {}).get("yaml_file")
            or (facts["config"] or {}).get("model_yaml")
            or (ckpt.get("train_args") or {}).get("model")
            or "yolo"
        )
        input_mode = (facts["config"] or {}).get("input", "image")
        exported = []
        for precision in ("fp32", "fp16") if half else ("fp32",):
            produced = Path(
                model.export(
                    format="onnx",
                    imgsz=size,
                    opset=opset,
                    simplify=True,
                    dynamic=dynamic_batch,
                    nms=False,
                    device=device,
                    quantize=16 if precision == "fp16" else None,
                )
            )
            target = out_dir / (f"{name}.onnx" if precision == "fp32" else f"{name}-fp16.onnx")
            shutil.move(produced, target)
            onnx_facts = _stamp_input(target, input_mode, scaleup)
            if onnx_facts.opset != opset:
                raise ExportError(f"{target}: asked for opset {opset}, the file has {onnx_facts.opset}")
            _check_loads(target, onnx_facts.input_dtype, size, batch=2 if dynamic_batch else 1)
            target_card = model_card(
                file=target,
                precision=precision,
                input_dtype=onnx_facts.input_dtype,
                task=task,
                architecture=Path(architecture).stem,
                classes=classes,
                imgsz=size,
                facts=facts,
                info=info,
                input_mode=input_mode,
                scaleup=scaleup,
                license=onnx_facts.license,
                export={
                    "opset": onnx_facts.opset,
                    "simplified": True,
                    "dynamic_batch": dynamic_batch,
                    "device": device,
                    "weights": str(weights),
                    "weights_sha256": file_sha256(weights),
                },
            )
            written = _signed(target_card.write_beside(target), signing_key)
            exported.append(ExportedModel(target, written, precision, "onnx"))
    return exported


def nvidia_gpu_name() -> str | None:
    """GPU 0's name and driver as nvidia-smi reports them; None on a machine without an NVIDIA GPU."""
    import subprocess

    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader", "-i", "0"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


def require_gpu() -> str:
    gpu = nvidia_gpu_name()
    if gpu is None:
        raise ExportError(
            "--tensorrt builds an engine for the GPU it runs on, and this machine has no NVIDIA GPU "
            "(nvidia-smi finds none); export ONNX here and build the engine on the GPU machine"
        )
    return gpu


def _signed(card_file: Path, signing_key: Path | None) -> Path:
    return sign_card_file(card_file, load_private_key(signing_key)) if signing_key is not None else card_file


def build_tensorrt_engine(
    onnx_path: Path, engine_path: Path | None = None, *, workspace_mib: int = 4096, signing_key: Path | None = None
) -> ExportedModel:
    """An engine built from an exported ONNX by TensorRT's own builder (the inference backend's, so the file
    matches what the service builds; not Ultralytics' .engine, whose metadata header other TensorRT tools
    reject), with a card derived from the ONNX's card. The engine keeps the ONNX's precision (strongly typed):
    build from the -fp16.onnx for an FP16 engine. Needs an NVIDIA GPU and the tensorrt package; an engine
    only runs on the GPU model and TensorRT version that built it, both recorded in the card."""
    from lineguard.vision.backends import tensorrt as trt_backend
    from lineguard.vision.backends.base import require
    from lineguard.vision.errors import BackendUnavailable, ModelLoadError

    onnx_path = Path(onnx_path)
    engine_path = Path(engine_path) if engine_path else onnx_path.with_suffix(".engine")
    gpu = require_gpu()
    source_card_path = card_path(onnx_path)
    if not source_card_path.is_file():
        raise ExportError(f"{source_card_path}: the ONNX's model card is missing; export the ONNX with lineguard")
    try:
        source = ModelCard.read(source_card_path, model=onnx_path)
        trt = require("tensorrt", onnx_path, trt_backend.KEY, trt_backend.INSTALL)
        settings = trt_backend.Settings(workspace_mib=workspace_mib, input_size=source.input.width)
        data = trt_backend.build_engine(trt, onnx_path, trt.Logger(trt.Logger.WARNING), settings)
    except (BackendUnavailable, ModelLoadError) as exc:
        raise ExportError(str(exc)) from None
    engine_path.write_bytes(data)

    # The ONNX's card, less its file's facts (onnx_sha256, onnx_bytes: the export section names the ONNX) and its
    # signature (which covered them).
    fields = {
        k: v
        for k, v in source.model_dump(mode="json", exclude_unset=True).items()
        if not k.startswith("onnx_") and k not in ("signature", "signed_by")
    }
    fields["export"] = {
        **fields.get("export", {}),
        "format": "tensorrt",
        "built_from": onnx_path.name,
        "onnx_sha256": source.onnx_sha256,
        "tensorrt": trt.__version__,
        "gpu": gpu,
        "workspace_mib": workspace_mib,
        "versions": versions(),
    }
    card = ModelCard.model_validate(
        {**fields, "engine_sha256": file_sha256(engine_path), "engine_bytes": engine_path.stat().st_size}
    )
    precision = card.export.precision if card.export else None
    written = _signed(card.write_beside(engine_path), signing_key)
    return ExportedModel(engine_path, written, precision or "fp32", "tensorrt")
