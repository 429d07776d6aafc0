"""The model card (lineguard.vision.card.ModelCard): the shipped card reads and writes back unchanged, an invalid
card is refused naming its file and field, what it does not know is kept, and what a card leaves out the
runtime takes from the file's Ultralytics metadata."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from lineguard.registry import RegistryError, push_card
from lineguard.vision.card import ModelCard, card_input_size, card_path
from lineguard.vision.model import ModelLoadError, load_model, packaged_model_path


def shipped() -> dict[str, Any]:
    return json.loads(card_path(packaged_model_path()).read_text())


def model_with(tmp_path: Path, card: dict[str, Any] | None) -> Path:
    path = tmp_path / "m.onnx"
    shutil.copyfile(packaged_model_path(), path)
    if card is not None:
        path.with_suffix(".json").write_text(json.dumps(card))
    return path


def test_the_shipped_card_reads_every_field_and_writes_back_unchanged(tmp_path: Path) -> None:
    card = ModelCard.beside(packaged_model_path())
    assert card is not None and card.model_extra == {}  # every field it has is a typed one
    assert (card.model_id, card.task, card.input.width, card.input.mode, card.input.scaleup) == (
        "deeppcb-yolo11n",
        "detect",
        672,
        "paired",
        False,
    )
    assert card.input.bgr_channels == ("image", "reference", "difference")
    assert card.classes == ("open", "short", "mousebite", "spur", "copper", "pin-hole")
    assert card.training and card.training.history and card.training.history[-1].run.endswith("cpu-polish")
    assert card.training.initial_weights and card.training.initial_weights.loaded is True
    assert card.metrics and card.metrics.map50_95 == shipped()["metrics"]["mAP50-95"]
    assert card.evaluation and card.evaluation.escapes == "0 of 100"
    assert card.export and card.export.versions["onnxruntime"] and card.license.startswith("AGPL-3.0")
    assert card.onnx_sha256 == shipped()["onnx_sha256"]
    assert card.to_json() == card_path(packaged_model_path()).read_text()
    assert ModelCard.read(card.write(tmp_path / "again.json")) == card


def test_what_the_card_does_not_know_is_kept(tmp_path: Path) -> None:
    data = {**shipped(), "reviewed_by": "qa", "training": {**shipped()["training"], "notes": "good run"}}
    card = ModelCard.validated(data, path=tmp_path / "m.onnx", what="model card")
    assert card.model_extra == {"reviewed_by": "qa"} and card.training.model_extra == {"notes": "good run"}
    assert json.loads(card.to_json()) == data


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"input": {"width": "wide"}}, "input.width", "Input should be a valid integer"),
        ({"input": {"width": 672, "scale_up": False}}, "input.scale_up", "Extra inputs are not permitted"),
        ({"classes": []}, "classes", "at least 1 item"),
        ({"classes": ["open", 2]}, "classes.1", "Input should be a valid string"),
        ({"task": "pose"}, "task", "task 'pose' is not one lineguard runs (detect, segment)"),
        ({"onnx_sha256": "abc"}, "onnx_sha256", "String should match pattern"),
        ({"metrics": {"mAP50": "high"}}, "metrics.mAP50", "Input should be a valid number"),
    ],
)
def test_an_invalid_card_is_refused_naming_the_file_and_field(
    tmp_path: Path, change: dict[str, Any], field: str, problem: str
) -> None:
    path = model_with(tmp_path, {**shipped(), **change})
    with pytest.raises(ModelLoadError) as err:
        load_model(path)
    assert str(err.value).startswith(f"model {path}: model card m.json: {field}: ")
    assert problem in str(err.value) and err.value.path == path


def test_a_card_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    path = model_with(tmp_path, None)
    path.with_suffix(".json").write_text("[1, 2]")
    with pytest.raises(ModelLoadError, match=r"model card m\.json is not a JSON object"):
        load_model(path)


def test_what_a_card_leaves_out_comes_from_the_files_metadata(tmp_path: Path) -> None:
    # Ultralytics' names and imgsz, lineguard's input mode and scaleup stamps: as without a card.
    loaded = load_model(model_with(tmp_path, {"model_id": "m", "version": "2"}), intra_op_threads=1)
    assert (loaded.card.model_id, loaded.card.version) == ("m", "2")
    assert loaded.card.classes == ("open", "short", "mousebite", "spur", "copper", "pin-hole")
    assert (loaded.card.input_size, loaded.card.input_mode, loaded.card.scaleup) == (672, "paired", False)
    # Written on its own, a card must say all of it.
    with pytest.raises(ModelLoadError, match=r"model card m\.json: classes: Field required; input: Field required"):
        ModelCard.beside(tmp_path / "m.onnx")
    # What a TensorRT engine is built for before the model loads: the card's side when it gives one.
    assert card_input_size(tmp_path / "m.onnx") is None and card_input_size(packaged_model_path()) == 672


def test_the_registry_reads_a_card_the_same_way(tmp_path: Path) -> None:
    path = model_with(tmp_path, None)
    card, where = push_card(shipped(), path)
    assert card == ModelCard.beside(packaged_model_path()) and where == f"model {path}"
    with pytest.raises(RegistryError, match=r"model card: input\.mode: Value error, input mode 'stereo' is not one"):
        push_card({**shipped(), "input": {"width": 672, "mode": "stereo"}}, path)
