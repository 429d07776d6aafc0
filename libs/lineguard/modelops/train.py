"""Train a YOLO11 detector with Ultralytics, export it to ONNX and write its model card.

Needs the `train` extra (torch, ultralytics, onnx, onnxslim): imported inside the
functions only, so importing this module costs nothing on a run-time box. Run with
the training environment's interpreter, e.g.

    nice -n 10 /work/trainvenv/bin/python -m lineguard.modelops.train --help
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from lineguard.modelops.deeppcb import labels_sha256


@dataclass(frozen=True)
class TrainConfig:
    data_yaml: Path
    model_yaml: str = "yolo11n.yaml"      # architecture only: no pretrained weights to download
    imgsz: int = 640
    epochs: int = 100
    time_hours: float | None = None       # wall-time budget: Ultralytics refits the epoch count to it
    batch: int = 8
    workers: int = 0
    fraction: float = 1.0
    seed: int = 0
    threads: int = 0                      # torch CPU threads; 0 = every core (Ultralytics alone keeps one free)
    opset: int = 17
    extra: dict = field(default_factory=dict)   # any other Ultralytics train argument


@dataclass(frozen=True)
class CardInfo:
    model_id: str
    version: str
    dataset_source: str
    machine: str
    description: str = ""


def _offline_ultralytics(run_dir: Path) -> None:
    """Keep Ultralytics from reaching the internet: no fonts, weights, pip installs or analytics."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(run_dir / "ultralytics-config"))


def _set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in ("ultralytics", "torch", "onnx", "onnxslim", "onnxruntime"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def _metrics(trainer) -> dict:
    raw = dict(getattr(trainer, "metrics", None) or {})
    found = {
        "precision": raw.get("metrics/precision(B)"),
        "recall": raw.get("metrics/recall(B)"),
        "mAP50": raw.get("metrics/mAP50(B)"),
        "mAP50-95": raw.get("metrics/mAP50-95(B)"),
    }
    box = getattr(getattr(getattr(trainer, "validator", None), "metrics", None), "box", None)
    names = getattr(getattr(trainer, "validator", None), "names", None) or {}
    if box is not None and len(getattr(box, "ap_class_index", [])):
        found["mAP50_per_class"] = {
            names.get(int(c), str(int(c))): round(float(box.ap50[i]), 4) for i, c in enumerate(box.ap_class_index)
        }
    return {k: (round(float(v), 4) if isinstance(v, float) else v) for k, v in found.items() if v is not None}


def train_and_export(config: TrainConfig, run_dir: Path, out_onnx: Path, card: CardInfo) -> Path:
    """Train, validate, export ONNX to out_onnx and write its card beside it (same stem, .json).

    Returns the card path. The card records what a later reader needs to trust or
    reproduce the model: classes, input size, dataset and label hash, config, time,
    machine, metrics, exporter versions and the ONNX file's sha256."""
    run_dir, out_onnx = Path(run_dir).resolve(), Path(out_onnx)
    run_dir.mkdir(parents=True, exist_ok=True)
    _offline_ultralytics(run_dir)
    from ultralytics import YOLO  # the train extra: never at run time

    dataset_dir = Path(config.data_yaml).resolve().parent
    started = time.monotonic()
    model = YOLO(config.model_yaml)
    threads = config.threads or os.cpu_count() or 1
    model.add_callback("on_pretrain_routine_start", lambda trainer: _set_torch_threads(threads))
    model.train(
        data=str(config.data_yaml),
        imgsz=config.imgsz,
        epochs=config.epochs,
        time=config.time_hours,
        batch=config.batch,
        workers=config.workers,
        fraction=config.fraction,
        seed=config.seed,
        device="cpu",
        pretrained=False,
        amp=False,        # the AMP check downloads weights; CPU training has no AMP anyway
        plots=False,      # plotting downloads a font
        project=str(run_dir),
        name="train",
        exist_ok=True,
        verbose=True,
        **config.extra,
    )
    train_seconds = time.monotonic() - started
    trainer = model.trainer
    metrics = _metrics(trainer)
    best = Path(trainer.best) if Path(trainer.best).is_file() else Path(trainer.last)

    exported = Path(YOLO(str(best)).export(
        format="onnx", imgsz=config.imgsz, opset=config.opset, simplify=True, dynamic=False, half=False,
        nms=False, device="cpu",
    ))
    out_onnx.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(exported, out_onnx)

    names = trainer.data["names"]
    card_data = {
        "model_id": card.model_id,
        "version": card.version,
        "description": card.description,
        "task": "detect",
        "architecture": Path(config.model_yaml).stem,
        "classes": [names[i] for i in sorted(names)],
        "input": {"width": config.imgsz, "height": config.imgsz, "channels": 3, "layout": "NCHW",
                  "color": "RGB", "scale": "1/255", "resize": "letterbox", "pad_value": 114},
        "output": {"layout": "(1, 4 + classes, anchors)", "box": "cx, cy, w, h in input pixels", "nms": False},
        "dataset": {
            "source": card.dataset_source,
            "labels_sha256": labels_sha256(dataset_dir),
            "train_images": len(getattr(trainer.train_loader, "dataset", []) or []),
        },
        "training": {
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
            "epochs_run": int(getattr(trainer, "epoch", -1)) + 1,
            "wall_seconds": round(train_seconds, 1),
            "machine": card.machine,
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        },
        "metrics": {"split": "val", **metrics},
        "export": {"format": "onnx", "opset": config.opset, "simplified": True, "versions": _versions()},
        "onnx_sha256": _sha256(out_onnx),
        "onnx_bytes": out_onnx.stat().st_size,
    }
    card_path = out_onnx.with_suffix(".json")
    card_path.write_text(json.dumps(card_data, indent=2) + "\n")
    return card_path


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="DeepPCB -> YOLO dataset -> YOLO11 training -> ONNX + model card")
    parser.add_argument("--deeppcb", type=Path, required=True, help="DeepPCB folder (holds trainval.txt)")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder for the dataset and the run")
    parser.add_argument("--out", type=Path, required=True, help="where the .onnx goes (the card lands beside it)")
    parser.add_argument("--model-id", default="deeppcb-yolo11n")
    parser.add_argument("--version", default="0.1.0")
    parser.add_argument("--val-groups", nargs="+", default=None)
    parser.add_argument("--train-fraction", type=float, default=1.0)
    parser.add_argument("--train-template-fraction", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--time-hours", type=float, default=None)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = every core")
    parser.add_argument("--machine", default=f"CPU, {os.cpu_count()} cores")
    parser.add_argument("--description", default="")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="any other Ultralytics train argument, e.g. --set val=False --set warmup_epochs=1")
    return parser.parse_args(argv)


def _extra(pairs: list[str]) -> dict:
    import yaml

    extra = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects KEY=VALUE, got {pair!r}")
        extra[key] = yaml.safe_load(value)
    return extra


def main(argv: list[str] | None = None) -> None:
    from lineguard.modelops.deeppcb import DEFAULT_VAL_GROUPS, import_deeppcb

    args = _parse(argv)
    summary = import_deeppcb(
        args.deeppcb, args.work / "dataset", tuple(args.val_groups or DEFAULT_VAL_GROUPS),
        train_fraction=args.train_fraction, train_template_fraction=args.train_template_fraction,
    )
    print(f"dataset: {summary.images} images, {summary.backgrounds} backgrounds, val groups {summary.val_groups}")
    config = TrainConfig(data_yaml=summary.data_yaml, imgsz=args.imgsz, epochs=args.epochs,
                         time_hours=args.time_hours, batch=args.batch, workers=args.workers,
                         threads=args.threads, extra=_extra(args.extra))
    source = (f"DeepPCB trainval (MIT); val groups {', '.join(summary.val_groups)}; "
              f"train fraction {args.train_fraction}, template fraction {args.train_template_fraction}")
    card_path = train_and_export(
        config, args.work / "runs", args.out,
        CardInfo(model_id=args.model_id, version=args.version, dataset_source=source, machine=args.machine,
                 description=args.description),
    )
    print(card_path.read_text())


if __name__ == "__main__":
    main()
