"""`lineguard recipe tune` end to end: the shipped model, fetched from the registry by the recipe's model reference
on a real nats-server, over labelled sample boards; the proposal a version `lineguard recipe push` stores as it is,
the curves a PNG, the report's figures the table's; bad input refused with the cause."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import cv2
import yaml
from typer.testing import CliRunner

from lineguard.cli import app
from lineguard.deeppcb_format import DEEPPCB_CLASSES
from lineguard.hashing import file_sha256
from lineguard.natsserver import EmbeddedNats
from lineguard.recipes import read_bundle
from lineguard.registry import connect_registry
from lineguard.testing.boards import sample_split
from lineguard.testing.models import MODEL_ID, model_version
from lineguard.vision.model import ModelCard, packaged_model_path

PAIRED = ModelCard.beside(packaged_model_path()).input_mode == "paired"
EXT = ".png" if PAIRED else ".jpg"
runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def four_boards(root: Path) -> Path:
    """Two boards with defects and their two good parts: quick on a CPU."""
    data = sample_split(root, paired=PAIRED)
    listed = [f"images/val/{stem}_{kind}{EXT}" for stem in ("00041000", "50600001") for kind in ("test", "temp")]
    (root / "four.txt").write_text("\n".join(listed) + "\n")
    four = root / "four.yaml"
    four.write_text(data.read_text().replace("val: images/val", "val: four.txt"))
    return four


def test_tune_proposes_a_version_that_recipe_push_stores(fresh_nats: EmbeddedNats, tmp_path: Path) -> None:
    model = model_version(tmp_path / "models", "1.0.0")
    asyncio.run(_push_model(fresh_nats.url, model))
    recipe_file = tmp_path / "pcb-a-1.yaml"
    recipe_file.write_text(
        yaml.safe_dump(
            {
                "id": "pcb-a",
                "version": "1",
                "min_score": 0.5,
                "classes": {"spur": {"verdict": "rework"}, "pin-hole": {"verdict": "ignore"}},
                "model": {"id": MODEL_ID, "version": "1.0.0", "sha256": file_sha256(model)},
            }
        )
    )
    nats = ["--nats", fresh_nats.url]
    assert cli("recipe", "push", str(recipe_file), *nats).exit_code == 0
    out = tmp_path / "tuned"
    data = four_boards(tmp_path / "data")

    tuned = cli("recipe", "tune", "--data", str(data), "--recipe", "pcb-a@1", "--out", str(out), *nats)

    report = json.loads((out / "report.json").read_text())
    assert tuned.exit_code == (0 if report["met"] else 1), tuned.output
    assert "whole part" in tuned.output and "pcb-a@1 -> pcb-a@1-tuned" in tuned.output
    assert report["model"] == {"id": MODEL_ID, "version": "1.0.0", "sha256": file_sha256(model)}
    assert report["images"] == 4 and report["ignored"] == ["pin-hole"]
    assert [c["name"] for c in report["classes"]] == [c for c in DEEPPCB_CLASSES if c != "pin-hole"]
    assert report["parts"]["proposed"]["bad"] == 2 and report["parts"]["proposed"]["good"] == 2
    proposal = read_bundle(out / "pcb-a-1-tuned.yaml")
    assert (
        proposal.sha256 == report["proposed"]["sha256"]
        and proposal.settings.model == read_bundle(recipe_file).settings.model
    )
    for c in report["classes"]:
        rule = proposal.settings.classes[c["name"]]
        assert rule.min_score == c["proposed"]["min_score"] and rule.min_area_px == c["proposed"]["min_area"]
        point = c["at_proposed"]
        if c["met"] and c["bad"]:
            assert point["escapes"] == 0, c  # the default target: no escape
    assert (
        proposal.settings.classes["spur"].verdict == "rework"
        and proposal.settings.classes["pin-hole"].verdict == "ignore"
    )
    image = cv2.imread(str(out / "curves.png"))
    assert image is not None and image.shape[1] == 720

    pushed = cli("recipe", "push", str(out / "pcb-a-1-tuned.yaml"), *nats)
    assert pushed.exit_code == 0 and f"pcb-a@1-tuned: stored (sha256 {proposal.sha256})" in pushed.output


async def _push_model(url: str, model: Path) -> None:
    async with connect_registry(url) as registry:
        await registry.push(model)


def test_bad_input_is_refused_naming_the_cause(tmp_path: Path) -> None:
    data = four_boards(tmp_path / "data")
    shipped = Path(shutil.copyfile(packaged_model_path(), tmp_path / "shipped.onnx"))
    shutil.copyfile(packaged_model_path().with_suffix(".json"), tmp_path / "shipped.json")
    no_model = tmp_path / "r.yaml"
    no_model.write_text("id: pcb-a\nversion: '1'\n")
    unknown_class = tmp_path / "u.yaml"
    unknown_class.write_text("id: pcb-a\nversion: '1'\nclasses: {scratch: {verdict: fail}}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: pcb-a\nversion: '1'\nmin_score: 1.6\n")

    nameless = cli("recipe", "tune", "--data", str(data), "--recipe", str(no_model), "--out", str(tmp_path / "o"))
    assert nameless.exit_code == 2 and "names no model" in nameless.output
    scratch = cli(
        "recipe",
        "tune",
        "--data",
        str(data),
        "--recipe",
        str(unknown_class),
        "--model",
        str(shipped),
        "--out",
        str(tmp_path / "o"),
    )
    assert scratch.exit_code == 2 and "RECIPE_CLASSES_UNKNOWN" in scratch.output and "'scratch'" in scratch.output
    invalid = cli("recipe", "tune", "--data", str(data), "--recipe", str(bad), "--out", str(tmp_path / "o"))
    assert invalid.exit_code == 2 and "min_score" in invalid.output and "bad.yaml:3" in invalid.output
    neither = cli("recipe", "tune", "--data", str(data), "--recipe", "pcb-a", "--out", str(tmp_path / "o"))
    assert neither.exit_code == 2 and "neither a recipe version file nor ID@VERSION" in neither.output
    no_split = cli(
        "recipe",
        "tune",
        "--data",
        str(data),
        "--split",
        "test",
        "--recipe",
        str(no_model),
        "--model",
        str(shipped),
        "--out",
        str(tmp_path / "o"),
    )
    assert no_split.exit_code == 2 and "no 'test' split" in no_split.output
    # A paired model over plain images would see each board as its own reference and find nothing.
    paired = Path(shutil.copyfile(packaged_model_path(), tmp_path / "paired.onnx"))
    card = json.loads(packaged_model_path().with_suffix(".json").read_text())
    (tmp_path / "paired.json").write_text(json.dumps({**card, "input": {**card["input"], "mode": "paired"}}))
    plain = sample_split(tmp_path / "plain", paired=False)
    args = ["--data", str(plain), "--recipe", str(no_model), "--model", str(paired), "--out", str(tmp_path / "p")]
    unpaired = cli("recipe", "tune", *args)
    assert unpaired.exit_code == 2 and "is a paired model" in unpaired.output and "a plain image" in unpaired.output
    assert not (tmp_path / "p" / "report.json").exists()
