"""A card's training history follows the runs that continued each other, through their recorded weights."""

import hashlib
import json
from pathlib import Path

from lineguard.modelops.export import training_history


def _run(root: Path, name: str, epochs: int, seconds: float, machine: str, parent: Path | None = None) -> Path:
    run = root / name
    (run / "weights").mkdir(parents=True)
    (run / "weights" / "best.pt").write_bytes(name.encode())  # distinct bytes, distinct sha256
    record = {
        "epochs_done": epochs,
        "wall_seconds": seconds,
        "metrics": {"mAP50": 0.5, "mAP50-95": 0.3},
        "sessions": [{"machine": machine, "wall_seconds": seconds, "started": "2026-11-27T20:00:00+00:00"}],
    }
    if parent is not None:
        weights = parent / "weights" / "best.pt"
        record["initial_weights"] = {"path": str(weights), "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    (run / "lineguard-run.json").write_text(json.dumps(record))
    return run


def _history(run: Path) -> list[dict]:
    return training_history(run, json.loads((run / "lineguard-run.json").read_text()))


def test_history_goes_back_to_the_first_run_oldest_first(tmp_path: Path) -> None:
    first = _run(tmp_path, "cpu", 15, 4900.0, "CPU")
    second = _run(tmp_path, "gpu", 81, 450.0, "GPU H100", parent=first)
    third = _run(tmp_path, "finetune", 22, 110.0, "GPU H100", parent=second)
    history = _history(third)
    assert [(s["run"], s["epochs"], s["machines"]) for s in history] == [
        ("cpu", 15, ["CPU"]),
        ("gpu", 81, ["GPU H100"]),
        ("finetune", 22, ["GPU H100"]),
    ]


def test_runs_moved_together_are_found_beside_each_other(tmp_path: Path) -> None:
    first = _run(tmp_path / "elsewhere", "cpu", 15, 4900.0, "CPU")
    second = _run(tmp_path / "elsewhere", "gpu", 81, 450.0, "GPU", parent=first)
    (tmp_path / "repo").mkdir()
    for run in (first, second):
        run.rename(tmp_path / "repo" / run.name)
    assert [s["run"] for s in _history(tmp_path / "repo" / "gpu")] == ["cpu", "gpu"]


def test_weights_that_changed_since_are_not_taken_for_the_ancestor(tmp_path: Path) -> None:
    first = _run(tmp_path, "cpu", 15, 4900.0, "CPU")
    second = _run(tmp_path, "gpu", 81, 450.0, "GPU", parent=first)
    (first / "weights" / "best.pt").write_bytes(b"trained further since")
    history = _history(second)
    assert history[0]["record"] == "not found" and history[0]["weights"].endswith("cpu/weights/best.pt")
    assert history[1]["run"] == "gpu"
