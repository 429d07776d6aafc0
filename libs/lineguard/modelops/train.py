"""Train a YOLO11 detector or segmenter with Ultralytics, reproducibly, and resume it across sessions.

Needs the `train` extra (torch, ultralytics, onnx, onnxslim): imported inside the
functions only, so importing this module costs nothing on a run-time box. A run folder
holds Ultralytics' own output (weights/last.pt, weights/best.pt, results.csv, args.yaml)
and `lineguard-run.json`: the full config, the dataset's label hash, every session (when,
on what machine, how long, which epochs) and the final validation metrics. The exporter
(lineguard.modelops.export) reads it to write the model card.

    lineguard model train --data data.yaml --epochs 100            # CPU
    lineguard model train --data data.yaml --device 0 --batch 64   # the same run on a GPU
    lineguard model train --resume runs/train-...                   # continue an interrupted run
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lineguard.modelops.augment import BrightnessContrast, LightingAugmentation
from lineguard.modelops.deeppcb import labels_sha256
from lineguard.modelops.extras import require_extra

RUN_RECORD = "lineguard-run.json"
TRAIN_EXTRA_MODULES: tuple[str, ...] = ("torch", "ultralytics", "onnx")


class RunError(RuntimeError):
    """A run folder cannot be trained or resumed; the message names the folder and the cause."""


class SessionTimeUp(Exception):
    """Raised from an epoch-end callback to end a session early, leaving last.pt resumable."""


@dataclass(frozen=True)
class TrainConfig:
    data_yaml: Path
    model_yaml: str = "yolo11n.yaml"  # architecture (from scratch; -seg for masks) or a .pt to continue from
    imgsz: int = 640
    epochs: int = 100
    time_hours: float | None = None  # budget for the whole run: Ultralytics refits the epoch count to it
    batch: int = 16
    workers: int | None = None  # data loader processes; None = 0 on the CPU, up to 8 on a GPU
    fraction: float = 1.0
    seed: int = 0
    deterministic: bool = True
    device: str = "cpu"  # "0" (or "0,1") for GPUs: nothing else changes
    threads: int = 0  # torch CPU threads; 0 = every core (Ultralytics alone keeps one free)
    stop_after_hours: float | None = None  # end this session at the first epoch end past it; resume later
    lighting: LightingAugmentation = field(default_factory=LightingAugmentation)
    input: str = "image"  # or "paired" (lineguard.vision.paired): from data.yaml's lineguard_input
    extra: dict = field(default_factory=dict)  # any other Ultralytics train argument

    @property
    def continues(self) -> bool:
        """Whether the run starts from trained weights (a .pt) rather than from an architecture."""
        return Path(self.model_yaml).suffix == ".pt"


@dataclass(frozen=True)
class CardInfo:
    model_id: str
    version: str
    dataset_source: str = ""
    machine: str = ""  # default: the machines the run record names
    description: str = ""


@dataclass(frozen=True)
class EpochReport:
    epoch: int  # 1-based
    epochs: int
    seconds: float
    losses: dict[str, float]
    metrics: dict[str, float]


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    best: Path
    last: Path
    status: str  # finished | stopped (session time budget; resumable)
    epochs_done: int
    epochs: int
    metrics: dict[str, Any]


def require_train_extra() -> None:
    """ExtraMissing naming what of the train extra is not installed."""
    require_extra("train", TRAIN_EXTRA_MODULES, "training")


def offline_ultralytics(run_dir: Path) -> None:
    """Keep Ultralytics from reaching the internet: no fonts, weights, pip installs or analytics."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(run_dir / "ultralytics-config"))


def _set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in ("ultralytics", "torch", "onnx", "onnxslim", "onnxruntime", "tensorrt"):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def machine_of(device: Any) -> str:
    """What trained: the GPU's name, or the CPU's with its cores."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return f"GPU {torch.cuda.get_device_name(device)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    try:
        names = [
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return f"CPU {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def metrics_of(raw: dict[str, Any], validator: Any = None) -> dict[str, Any]:
    """Ultralytics' validation metrics (boxes, and masks for a segmenter) under plain names; with the validator
    that computed them, mAP50 per class too."""
    found: dict[str, Any] = {}
    for suffix, prefix in (("B", ""), ("M", "mask_")):
        for key in ("precision", "recall", "mAP50", "mAP50-95"):
            value = (raw or {}).get(f"metrics/{key}({suffix})")
            if value is not None:
                found[prefix + key] = round(float(value), 4)
    box = getattr(getattr(validator, "metrics", None), "box", None)
    names = getattr(validator, "names", None) or {}
    if box is not None and len(getattr(box, "ap_class_index", [])):
        found["mAP50_per_class"] = {
            names.get(int(c), str(int(c))): round(float(box.ap50[i]), 4) for i, c in enumerate(box.ap_class_index)
        }
    return found


def _same_weights(model: Any, checkpoint: str) -> bool:
    """Whether the model about to train holds the checkpoint's weights (its first tensor, exactly)."""
    import torch

    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    saved = (saved.get("ema") or saved.get("model")).float().state_dict()
    ours = model.state_dict()
    key = next(k for k in saved if k in ours and saved[k].is_floating_point())
    return bool(torch.equal(saved[key], ours[key].detach().float().cpu()))


def _trainer_class(task: str, lighting: LightingAugmentation, paired: bool) -> type:
    """Ultralytics' trainer for the task, with the brightness / contrast transform in every training dataset
    (also after close_mosaic rebuilds the transforms)."""
    from ultralytics.models import yolo

    base = {"detect": yolo.detect.DetectionTrainer, "segment": yolo.segment.SegmentationTrainer}.get(task)
    if base is None:
        raise RunError(f"task {task!r}: lineguard trains detect and segment models only")

    class LightingTrainer(base):  # type: ignore[misc, valid-type]
        def build_dataset(self, img_path, mode="train", batch=None):
            dataset = super().build_dataset(img_path, mode, batch)
            if mode == "train" and lighting.p > 0:
                own = dataset.build_transforms

                def with_lighting(transforms):
                    # before the final Format step, after mosaic / HSV: the pixels the model will see
                    transforms.insert(
                        len(transforms.transforms) - 1,
                        BrightnessContrast(lighting.brightness, lighting.contrast, lighting.p, paired),
                    )
                    return transforms

                dataset.build_transforms = lambda hyp: with_lighting(own(hyp))
                dataset.transforms = with_lighting(dataset.transforms)
            return dataset

    return LightingTrainer


def _ultralytics_args(config: TrainConfig, run_dir: Path) -> dict[str, Any]:
    workers = (
        config.workers if config.workers is not None else (0 if config.device == "cpu" else min(8, os.cpu_count() or 1))
    )
    return {
        "data": str(Path(config.data_yaml).resolve()),
        "imgsz": config.imgsz,
        "epochs": config.epochs,
        "time": config.time_hours,
        "batch": config.batch,
        "workers": workers,
        "fraction": config.fraction,
        "seed": config.seed,
        "deterministic": config.deterministic,
        "device": config.device,
        # Ultralytics drops a .pt model's weights when pretrained is False: only from-scratch runs say so.
        "pretrained": config.continues,
        "amp": False,  # the AMP check downloads weights; set extra amp=True on a GPU with network
        "plots": False,  # plotting downloads a font
        "project": str(run_dir.parent),
        "name": run_dir.name,
        "exist_ok": True,
        "verbose": True,
        **config.lighting.ultralytics_args(paired=config.input == "paired"),
        **config.extra,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def read_run_record(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / RUN_RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RunError(f"{path}: not readable JSON ({exc})") from None


def _write_record(run_dir: Path, record: dict[str, Any]) -> None:
    path = run_dir / RUN_RECORD
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_jsonable(record), indent=2) + "\n")
    tmp.replace(path)  # a reader (or a crash) never sees half a record


def config_from_record(record: dict[str, Any]) -> TrainConfig:
    # A record written by an older lineguard may hold settings since retired (e.g. `opset`, now an
    # export option): they no longer shape training, so they are left out rather than refused.
    known = {f.name for f in fields(TrainConfig)}
    raw = {k: v for k, v in record["config"].items() if k in known}
    raw["data_yaml"] = Path(raw["data_yaml"])
    raw["lighting"] = LightingAugmentation(**raw.get("lighting", {}))
    return TrainConfig(**raw)


def _session(
    model: Any,
    config: TrainConfig,
    run_dir: Path,
    record: dict[str, Any],
    train_args: dict[str, Any],
    on_epoch: Callable[[EpochReport], None] | None,
) -> TrainResult:
    """One training session: the callbacks that keep the record, report epochs and stop on the session budget."""
    session: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_seconds": 0.0,
        "status": "running",
    }
    record.setdefault("sessions", []).append(session)
    record["status"] = "running"
    started = time.monotonic()
    threads = config.threads or os.cpu_count() or 1
    state = {"epoch_started": started}

    def on_pretrain_start(trainer):
        if trainer.device.type == "cpu":
            _set_torch_threads(threads)

    def on_pretrain_end(trainer):
        session["machine"] = machine_of(trainer.device)
        session["device"] = str(trainer.device)
        session["first_epoch"] = trainer.start_epoch + 1
        # What the training images go through, as built: proof the lighting change is in the pipeline.
        transforms = getattr(getattr(trainer.train_loader, "dataset", None), "transforms", None)
        session["train_transforms"] = [type(t).__name__ for t in getattr(transforms, "transforms", [])]
        initial = record.get("initial_weights")
        if initial is not None and "loaded" not in initial:
            initial["loaded"] = _same_weights(trainer.model, initial["path"])
        record["epochs"] = trainer.epochs
        _write_record(run_dir, record)
        state["epoch_started"] = time.monotonic()

    def on_fit_epoch_end(trainer):
        if state.get("training_done"):
            return  # final_eval calls this once more, for best.pt
        state["training_done"] = bool(trainer.stop)
        now = time.monotonic()
        session["wall_seconds"] = round(now - started, 1)
        session["last_epoch"] = trainer.epoch + 1
        record["epochs_done"] = trainer.epoch + 1
        record["epochs"] = trainer.epochs
        _write_record(run_dir, record)
        if on_epoch is not None:
            losses = (
                {k: round(float(v), 4) for k, v in (trainer.tloss or {}).items()}
                if isinstance(trainer.tloss, dict)
                else {}
            )
            on_epoch(
                EpochReport(
                    trainer.epoch + 1,
                    trainer.epochs,
                    now - state["epoch_started"],
                    losses,
                    {k: round(float(v), 4) for k, v in (trainer.metrics or {}).items() if k.startswith("metrics/")},
                )
            )
        state["epoch_started"] = now
        budget = config.stop_after_hours
        if budget and now - started > budget * 3600 and trainer.epoch + 1 < trainer.epochs and not trainer.stop:
            raise SessionTimeUp

    model.add_callback("on_pretrain_routine_start", on_pretrain_start)
    model.add_callback("on_pretrain_routine_end", on_pretrain_end)
    model.add_callback("on_fit_epoch_end", on_fit_epoch_end)
    trainer_cls = _trainer_class(model.task, config.lighting, config.input == "paired")
    status = "finished"
    try:
        model.train(trainer=trainer_cls, **train_args)
    except SessionTimeUp:
        status = "stopped"
    except BaseException as exc:
        session["status"] = record["status"] = (
            "interrupted" if isinstance(exc, KeyboardInterrupt) else f"failed: {type(exc).__name__}: {exc}"
        )
        session["wall_seconds"] = round(time.monotonic() - started, 1)
        _write_record(run_dir, record)
        raise
    finally:
        trainer = getattr(model, "trainer", None)
        for loader in (getattr(trainer, "train_loader", None), getattr(trainer, "test_loader", None)):
            close = getattr(loader, "close", None)
            if status == "stopped" and close is not None:
                close()
    trainer = model.trainer
    session.update(
        status=status,
        finished=datetime.now(UTC).isoformat(timespec="seconds"),
        wall_seconds=round(time.monotonic() - started, 1),
    )
    record["status"] = status
    record["wall_seconds"] = round(sum(s.get("wall_seconds", 0.0) for s in record["sessions"]), 1)
    if status == "finished":
        record["epochs_done"] = int(trainer.epoch) + 1
        record["metrics"] = {"split": "val", "weights": "best.pt", **metrics_of(trainer.metrics, trainer.validator)}
    _write_record(run_dir, record)
    weights = run_dir / "weights"
    return TrainResult(
        run_dir=run_dir,
        best=weights / "best.pt",
        last=weights / "last.pt",
        status=status,
        epochs_done=int(record.get("epochs_done", 0)),
        epochs=int(record.get("epochs", 0)),
        metrics=record.get("metrics", {}),
    )


def train(config: TrainConfig, run_dir: Path, *, on_epoch: Callable[[EpochReport], None] | None = None) -> TrainResult:
    """A new run in run_dir (which must not hold one already: resume it instead)."""
    require_train_extra()
    run_dir = Path(run_dir).resolve()
    if (run_dir / RUN_RECORD).exists() or (run_dir / "weights").exists():
        raise RunError(f"{run_dir}: already holds a run; resume it (--resume {run_dir}) or choose another folder")
    if not Path(config.data_yaml).is_file():
        raise RunError(f"{config.data_yaml}: dataset file not found")
    config = replace(config, data_yaml=Path(config.data_yaml).resolve(), input=input_mode_of(config.data_yaml))
    run_dir.mkdir(parents=True, exist_ok=True)
    offline_ultralytics(run_dir)
    from ultralytics import YOLO  # the train extra: never at run time

    from lineguard.modelops.stats import read_data_yaml

    root, names, _ = read_data_yaml(config.data_yaml)
    model = YOLO(config.model_yaml)
    record: dict[str, Any] = {
        "format": 1,
        "task": model.task,
        "architecture": Path(
            str((getattr(model.model, "yaml", None) or {}).get("yaml_file") or config.model_yaml)
        ).stem,
        "config": asdict(config),
        "ultralytics_args": _ultralytics_args(config, run_dir),
        "dataset": {
            "data_yaml": str(Path(config.data_yaml).resolve()),
            "names": list(names),
            "labels_sha256": labels_sha256(root),
        },
        "versions": versions(),
    }
    if config.continues:
        # Continued from earlier weights: which ones, so the card can say the model's whole history.
        from lineguard.hashing import file_sha256

        record["initial_weights"] = {
            "path": str(Path(config.model_yaml).resolve()),
            "sha256": file_sha256(Path(config.model_yaml)),
        }
    return _session(model, config, run_dir, record, record["ultralytics_args"], on_epoch)


def input_mode_of(data_yaml: Path) -> str:
    """What the dataset's images are: plain images, or paired inputs (`lineguard_input: paired`)."""
    import yaml

    from lineguard.vision.paired import INPUT_MODES

    mode = (yaml.safe_load(Path(data_yaml).read_text()) or {}).get("lineguard_input", "image")
    if mode not in INPUT_MODES:
        raise RunError(f"{data_yaml}: lineguard_input {mode!r} is not one of {', '.join(INPUT_MODES)}")
    return mode


def resume(
    run_dir: Path,
    *,
    device: str | None = None,
    stop_after_hours: float | None = None,
    workers: int | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> TrainResult:
    """Continue the run in run_dir from weights/last.pt with its recorded config (the folder may have moved,
    e.g. to a GPU machine and back); device, workers and the session budget may change."""
    require_train_extra()
    run_dir = Path(run_dir).resolve()
    last = run_dir / "weights" / "last.pt"
    record = read_run_record(run_dir)
    if record is None:
        raise RunError(f"{run_dir}: no {RUN_RECORD}; not a run started by lineguard model train")
    if not last.is_file():
        raise RunError(f"{last}: missing; the run saved no epoch yet, start it again")
    offline_ultralytics(run_dir)
    import torch
    from ultralytics import YOLO

    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    if ckpt.get("optimizer") is None or ckpt.get("epoch", -1) < 0:
        raise RunError(
            f"{run_dir}: training finished ({record.get('epochs_done')} of {record.get('epochs')} epochs); "
            "nothing to resume. Start a new run to train longer"
        )
    config = config_from_record(record)
    changes: dict[str, Any] = {
        k: v
        for k, v in (("device", device), ("stop_after_hours", stop_after_hours), ("workers", workers))
        if v is not None
    }
    config = replace(config, **changes)
    record.setdefault("resumed_with", []).append(changes)
    args = _ultralytics_args(config, run_dir)
    train_args = {"resume": True, "save_dir": str(run_dir), "device": args["device"], "workers": args["workers"]}
    if Path(args["data"]).is_file():
        train_args["data"] = args["data"]
    return _session(YOLO(str(last)), config, run_dir, record, train_args, on_epoch)


def parse_extra(pairs: list[str]) -> dict:
    """KEY=VALUE pairs (values as YAML: 1, 0.5, true, ram) for Ultralytics arguments lineguard does not name."""
    import yaml

    extra = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        extra[key] = yaml.safe_load(value)
    return extra
