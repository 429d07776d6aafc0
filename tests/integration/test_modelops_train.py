"""Train -> export -> load, end to end on tiny data (seconds on a CPU): `lineguard model train` for one epoch,
`lineguard model export --half`, and both ONNX files served by lineguard.vision.model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from lineguard.cli import app

pytest.importorskip("ultralytics")

runner = CliRunner()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 tiny 64x64 images with one bright rectangle each, two classes, imported with `lineguard data import-yolo`."""
    root = tmp_path_factory.mktemp("train")
    src = root / "src"
    src.mkdir()
    for i in range(8):
        image = np.full((64, 64, 3), 40 + 10 * i, np.uint8)
        cv2.rectangle(image, (10 + i, 12), (30 + i, 42), (255, 255, 255), -1)
        cv2.imwrite(str(src / f"board{i}.jpg"), image)
        (src / f"board{i}.txt").write_text(f"{i % 2} {(20 + i) / 64:.5f} {27 / 64:.5f} {20 / 64:.5f} {30 / 64:.5f}\n")
    (src / "classes.txt").write_text("open\nshort\n")
    result = runner.invoke(app, ["data", "import-yolo", str(src), str(root / "ds"), "--val-fraction", "0.25"])
    assert result.exit_code == 0, result.output
    return root / "ds" / "data.yaml"


@pytest.fixture(scope="module")
def run_dir(dataset: Path) -> Path:
    run = dataset.parent.parent / "runs" / "smoke"
    result = runner.invoke(
        app,
        [
            "model",
            "train",
            "--data",
            str(dataset),
            "--model",
            "yolo11n.yaml",
            "--epochs",
            "1",
            "--imgsz",
            "64",
            "--batch",
            "4",
            "--seed",
            "3",
            "--out",
            str(run),
        ],
    )
    assert result.exit_code == 0, result.output
    return run


def test_training_records_config_lighting_and_session(run_dir: Path, dataset: Path) -> None:
    assert (run_dir / "weights" / "best.pt").is_file() and (run_dir / "weights" / "last.pt").is_file()
    record = json.loads((run_dir / "lineguard-run.json").read_text())
    assert record["status"] == "finished" and record["epochs_done"] == 1 and record["task"] == "detect"
    assert record["config"]["seed"] == 3 and record["config"]["deterministic"] is True
    assert record["config"]["data_yaml"] == str(dataset.resolve())
    assert record["config"]["lighting"] == {
        "hsv_h": 0.015,
        "hsv_s": 0.7,
        "hsv_v": 0.4,
        "brightness": 0.2,
        "contrast": 0.3,
        "p": 0.5,
    }
    assert record["ultralytics_args"]["hsv_v"] == 0.4 and record["ultralytics_args"]["device"] == "cpu"
    session = record["sessions"][0]
    assert session["machine"].startswith("CPU ") and session["wall_seconds"] > 0
    # The brightness / contrast change sits in the training pipeline just before the final formatting.
    assert session["train_transforms"][-2:] == ["BrightnessContrast", "Format"]
    assert set(record["metrics"]) >= {"precision", "recall", "mAP50", "mAP50-95"}
    assert len(record["dataset"]["labels_sha256"]) == 64


def test_a_finished_run_cannot_be_resumed_and_a_used_folder_is_refused(run_dir: Path, dataset: Path) -> None:
    result = runner.invoke(app, ["model", "train", "--resume", str(run_dir)])
    assert result.exit_code == 2 and "nothing to resume" in result.output.replace("\n", " ")
    result = runner.invoke(app, ["model", "train", "--data", str(dataset), "--out", str(run_dir)])
    assert result.exit_code == 2 and "already holds a run" in result.output.replace("\n", " ")


def test_export_fp32_and_fp16_with_cards_and_both_serve(run_dir: Path, tmp_path: Path) -> None:
    from lineguard.vision.detect import detect
    from lineguard.vision.model import load_model

    out = tmp_path / "models"
    result = runner.invoke(
        app,
        [
            "model",
            "export",
            "--weights",
            str(run_dir / "weights" / "best.pt"),
            "--out",
            str(out),
            "--half",
            "--opset",
            "17",
            "--version",
            "1.2.3",
        ],
    )
    assert result.exit_code == 0, result.output
    image = cv2.imread(str(next((run_dir.parent.parent / "ds" / "images").rglob("*.jpg"))))
    for name, precision in (("smoke.onnx", "fp32"), ("smoke-fp16.onnx", "fp16")):
        card = json.loads((out / name).with_suffix(".json").read_text())
        assert card["classes"] == ["open", "short"] and card["task"] == "detect" and card["version"] == "1.2.3"
        assert card["input"]["width"] == 64 and card["export"]["opset"] == 17
        assert card["export"]["precision"] == precision
        assert {"torch", "ultralytics", "onnx"} <= set(card["export"]["versions"])
        assert card["license"].startswith("AGPL-3.0")  # Ultralytics' stamp on the weights, carried to the card
        assert card["onnx_sha256"] == __import__("hashlib").sha256((out / name).read_bytes()).hexdigest()
        assert card["training"]["epochs_run"] == 1 and card["training"]["machine"].startswith("CPU ")
        assert card["training"]["config"]["lighting"]["contrast"] == 0.3
        assert len(card["dataset"]["labels_sha256"]) == 64 and "mAP50" in card["metrics"]
        assert card["export"]["dynamic_batch"] is True
        batch_dim = __import__("onnx").load(out / name).graph.input[0].type.tensor_type.shape.dim[0]
        assert batch_dim.dim_param and not batch_dim.dim_value, "the batch axis must be dynamic for micro-batching"
        detector = load_model(out / name)
        assert detector.card.classes == ("open", "short") and detector.card.version == "1.2.3"
        found = detect(detector, image, conf_threshold=0.0001, iou_threshold=0.5)
        assert all(detector.card.classes[c] in {"open", "short"} for c in found.detections.class_id)
    assert (out / "smoke-fp16.onnx").stat().st_size < 0.6 * (out / "smoke.onnx").stat().st_size


def test_an_fp16_input_model_is_fed_float16(run_dir: Path, tmp_path: Path) -> None:
    """A GPU export of FP16 declares a float16 input; the runtime must feed it that, on the CPU too."""
    import onnx
    from onnxruntime.transformers import float16

    from lineguard.vision.model import load_model

    out = tmp_path / "fp16io"
    result = runner.invoke(
        app, ["model", "export", "--weights", str(run_dir / "weights" / "best.pt"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    converted = float16.convert_float_to_float16(onnx.load(str(out / "smoke.onnx")), keep_io_types=False)
    onnx.save(converted, str(out / "io16.onnx"))
    # The FP32 file's card, less its sha256: it describes how io16.onnx is fed, not its bytes.
    card = {k: v for k, v in json.loads((out / "smoke.json").read_text()).items() if k != "onnx_sha256"}
    (out / "io16.json").write_text(json.dumps(card))
    detector = load_model(out / "io16.onnx")
    assert detector.runner.input.dtype == np.float16
    output = detector.run(np.zeros((1, 3, 64, 64), np.float32))
    assert output.dtype == np.float32 and output.shape == (1, 4 + 2, 84)


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has a GPU")
def test_tensorrt_without_a_gpu_is_a_clear_error(run_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "model",
            "export",
            "--weights",
            str(run_dir / "weights" / "best.pt"),
            "--out",
            str(tmp_path / "trt"),
            "--tensorrt",
        ],
    )
    assert result.exit_code == 2 and "no NVIDIA GPU" in result.output.replace("\n", " ")
    assert not (tmp_path / "trt").exists()


def test_a_session_budget_stops_resumably_and_resume_finishes(dataset: Path, tmp_path: Path) -> None:
    from lineguard.modelops.train import TrainConfig, resume, train

    config = TrainConfig(data_yaml=dataset, imgsz=64, epochs=2, batch=4, stop_after_hours=1e-9)
    first = train(config, tmp_path / "run")
    assert (first.status, first.epochs_done) == ("stopped", 1)
    second = resume(tmp_path / "run", stop_after_hours=10.0)
    assert (second.status, second.epochs_done, second.epochs) == ("finished", 2, 2)
    record = json.loads((tmp_path / "run" / "lineguard-run.json").read_text())
    assert [(s["status"], s["first_epoch"], s["last_epoch"]) for s in record["sessions"]] == [
        ("stopped", 1, 1),
        ("finished", 2, 2),
    ]
    assert record["wall_seconds"] == pytest.approx(sum(s["wall_seconds"] for s in record["sessions"]), abs=0.2)


def test_a_paired_dataset_trains_a_model_that_asks_for_a_reference(tmp_path: Path) -> None:
    """Paired inputs (image, reference, difference) train without colour jitter, the card says so, and the loaded
    model refuses an image without its reference."""
    from lineguard.imaging import ImageError
    from lineguard.vision.detect import detect
    from lineguard.vision.model import load_model
    from lineguard.vision.paired import compose

    src = tmp_path / "src"
    src.mkdir()
    golden = np.full((64, 64), 60, np.uint8)
    for i in range(8):
        board = golden.copy()
        cv2.rectangle(board, (10 + i, 12), (30 + i, 42), 255, -1)
        cv2.imwrite(str(src / f"board{i}.png"), compose(board, golden))
        (src / f"board{i}.txt").write_text(f"0 {(20 + i) / 64:.5f} {27 / 64:.5f} {20 / 64:.5f} {30 / 64:.5f}\n")
    (src / "classes.txt").write_text("open\n")
    assert runner.invoke(app, ["data", "import-yolo", str(src), str(tmp_path / "ds")]).exit_code == 0
    data = tmp_path / "ds" / "data.yaml"
    data.write_text(data.read_text() + "lineguard_input: paired\n")
    result = runner.invoke(
        app,
        [
            "model",
            "train",
            "--data",
            str(data),
            "--epochs",
            "1",
            "--imgsz",
            "64",
            "--batch",
            "4",
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "run" / "lineguard-run.json").read_text())
    assert record["config"]["input"] == "paired"
    assert [record["ultralytics_args"][k] for k in ("hsv_h", "hsv_s", "hsv_v")] == [0.0, 0.0, 0.0]
    assert record["sessions"][0]["train_transforms"][-2:] == ["BrightnessContrast", "Format"]
    result = runner.invoke(
        app,
        [
            "model",
            "export",
            "--weights",
            str(tmp_path / "run" / "weights" / "best.pt"),
            "--out",
            str(tmp_path / "out"),
            "--name",
            "paired",
            "--no-scaleup",
        ],
    )
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "out" / "paired.json").read_text())
    assert card["input"]["mode"] == "paired" and card["input"]["bgr_channels"] == ["image", "reference", "difference"]
    assert card["input"]["scaleup"] is False
    detector = load_model(tmp_path / "out" / "paired.onnx")
    assert (detector.card.input_mode, detector.card.scaleup) == ("paired", False)
    # The file alone (a card lost on the way) still says how it must be fed.
    alone = Path(shutil.copyfile(tmp_path / "out" / "paired.onnx", tmp_path / "alone.onnx"))
    assert (load_model(alone).card.input_mode, load_model(alone).card.scaleup) == ("paired", False)
    board = cv2.imread(str(src / "board0.png"))[:, :, 0]
    detect(detector, board, conf_threshold=0.001, iou_threshold=0.5, reference=golden)
    with pytest.raises(ImageError, match="compares each image with the part's reference image, and none was given"):
        detect(detector, board, conf_threshold=0.001, iou_threshold=0.5)


def test_a_new_run_continues_from_trained_weights_and_says_so(run_dir: Path, dataset: Path, tmp_path: Path) -> None:
    best = run_dir / "weights" / "best.pt"
    result = runner.invoke(
        app,
        [
            "model",
            "train",
            "--data",
            str(dataset),
            "--model",
            str(best),
            "--epochs",
            "1",
            "--imgsz",
            "64",
            "--batch",
            "4",
            "--out",
            str(tmp_path / "more"),
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "more" / "lineguard-run.json").read_text())
    assert record["architecture"] == "yolo11n"
    assert record["initial_weights"] == {
        "path": str(best.resolve()),
        "sha256": __import__("hashlib").sha256(best.read_bytes()).hexdigest(),
        "loaded": True,
    }  # checked on the model about to train
    assert record["ultralytics_args"]["pretrained"] is True
    result = runner.invoke(
        app,
        [
            "model",
            "export",
            "--weights",
            str(tmp_path / "more" / "weights" / "best.pt"),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "out" / "more.json").read_text())
    assert card["training"]["initial_weights"] == record["initial_weights"]
    # How long the weights trained in all: the run it continued, then this one.
    assert [s["run"] for s in card["training"]["history"]] == [run_dir.name, "more"]
    assert card["training"]["total_epochs"] == 2


def test_export_with_a_key_signs_the_card_and_the_service_trusts_it(run_dir: Path, tmp_path: Path) -> None:
    from lineguard.vision.model import ModelLoadError, load_model
    from lineguard.vision.signing import Trust, generate_keypair

    private, public = generate_keypair(tmp_path / "keys" / "exporter")
    out = tmp_path / "signed"
    result = runner.invoke(
        app,
        [
            "model",
            "export",
            "--weights",
            str(run_dir / "weights" / "best.pt"),
            "--out",
            str(out),
            "--key",
            str(private),
        ],
    )
    assert result.exit_code == 0, result.output
    card = json.loads((out / "smoke.json").read_text())
    trust = Trust.from_dir(public.parent)
    assert card["signed_by"] in trust.keys
    load_model(out / "smoke.onnx", trust=trust).close()
    with pytest.raises(ModelLoadError, match="not one of the trusted keys"):
        load_model(out / "smoke.onnx", trust=Trust.from_dir(None))
