"""One training session on a lent GPU machine, driven by training/device/session.sh.

That machine has torch, opencv, numpy and pyyaml but not lineguard's run-time stack, so
this calls lineguard.modelops directly (the same importer and trainer as `lineguard data
import-deeppcb --paired` and `lineguard model train`) instead of the CLI. It builds the
paired DeepPCB dataset there (the importer is deterministic: the same split and label
hash as on any other machine), continues a run from earlier weights for a wall-clock
budget, and copies what the run needs back into OUT:

    python3 training/device/train.py train --deeppcb DIR --work DIR --hours 0.12 [--model PT] [--set k=v ...]
    python3 training/device/train.py collect --work DIR --out DIR
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import shutil
import sys
import time
from pathlib import Path

RUN_FILES = ("lineguard-run.json", "args.yaml", "results.csv")


def _read_results_csv(trainer) -> dict:
    # Ultralytics reads results.csv with polars only to embed it in each checkpoint; polars (170 MB)
    # does not fit the machine's 64 MiB transfer, so the standard library reads it instead.
    try:
        with open(trainer.csv, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return {}
    return {key.strip(): [float(r[key]) for r in rows] for key in (rows[0] if rows else {})}


def train(args: argparse.Namespace) -> int:
    from lineguard.modelops.deeppcb import import_deeppcb
    from lineguard.modelops.train import TrainConfig, offline_ultralytics, parse_extra
    from lineguard.modelops.train import train as train_run

    work = Path(args.work)
    offline_ultralytics(work / "run")  # before Ultralytics is first imported: it reads these at import
    if importlib.util.find_spec("polars") is None:
        from ultralytics.engine.trainer import BaseTrainer

        BaseTrainer.read_results_csv = _read_results_csv

    dataset = work / "dataset"
    started = time.monotonic()
    summary = import_deeppcb(Path(args.deeppcb), dataset, paired=True, train_template_fraction=0.2)
    print(f"dataset {dataset}: {summary} ({time.monotonic() - started:.0f} s)", flush=True)

    config = TrainConfig(
        data_yaml=dataset / "data.yaml",
        model_yaml=args.model,
        imgsz=640,
        epochs=args.epochs,
        time_hours=args.hours,
        batch=args.batch,
        workers=args.workers,
        device=args.device,
        extra=parse_extra(args.set or []),
    )

    def report(epoch) -> None:
        print(f"epoch {epoch.epoch}/{epoch.epochs} {epoch.seconds:.1f} s {epoch.losses} {epoch.metrics}", flush=True)

    result = train_run(config, work / "run", on_epoch=report)
    print(f"run {result.run_dir}: {result.status}, {result.epochs_done} of {result.epochs} epochs, {result.metrics}")
    return 0


def collect(args: argparse.Namespace) -> int:
    """Copy the run's record and weights into OUT (flat: the transfer keeps two folder levels), stripping the
    optimiser from a checkpoint that a killed session left whole, so each file stays small."""
    run, out = Path(args.work) / "run", Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if (run / name).is_file():
            shutil.copy2(run / name, out / name)
    for name in ("best.pt", "last.pt"):
        weights = run / "weights" / name
        if weights.is_file():
            shutil.copy2(weights, out / name)
            from ultralytics.utils.torch_utils import strip_optimizer

            strip_optimizer(out / name)  # keeps a finished run's already-stripped file as it is
    print("collected:", sorted(p.name for p in out.iterdir()))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True)
    run = verbs.add_parser("train")
    run.add_argument("--deeppcb", required=True, help="the published DeepPCB folder")
    run.add_argument("--work", required=True, help="where the dataset and the run folder go")
    # The one run whose weights are committed (.gitignore): the only ones the device machine's copy of the tree has.
    run.add_argument("--model", default="training/deeppcb-yolo11n-paired-cpu-polish/weights/best.pt")
    run.add_argument("--hours", type=float, required=True, help="training budget: Ultralytics fits the epochs to it")
    run.add_argument("--epochs", type=int, default=300, help="upper bound on the epochs")
    run.add_argument("--batch", type=int, default=16)
    run.add_argument("--workers", type=int, default=12)
    run.add_argument("--device", default="0", help='"cpu" to rehearse the session on a machine without one')
    run.add_argument("--set", action="append", help="KEY=VALUE, any other Ultralytics argument")
    out = verbs.add_parser("collect")
    out.add_argument("--work", required=True)
    out.add_argument("--out", required=True)
    args = parser.parse_args()
    return train(args) if args.verb == "train" else collect(args)


if __name__ == "__main__":
    sys.exit(main())
