"""`lineguard ocr read` with printed text and fields, `lineguard ocr eval` scoring the printed line, and the
text scores themselves (exact match, character error rate, a wrong serial that passes its check)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from lineguard.cli import app
from lineguard.ocr.checksums import gs1_check_digit
from lineguard.ocr.evaluate import TextScore, edit_distance, text_roi
from lineguard.ocr.labels import LabelSettings, write_set
from lineguard.ocr.text import TextLine
from lineguard.sim.lineconfig import write_config

MILD = LabelSettings(rotation_deg=5, perspective=0.01, blur_sigma=0.4, noise_sigma=2, glare=0, contrast_min=0.8, gs1=0)


def line(text: str) -> TextLine:
    return TextLine(text, 0.9, (0.0, 0.0, 1.0, 1.0))


def test_edit_distance_counts_insertions_deletions_substitutions() -> None:
    assert edit_distance("LG-1234567-8", "LG-1234567-8") == 0
    assert edit_distance("LG-1234567-8", "L0-1234567-8") == 1
    assert edit_distance("LG-123456-8", "LG-1234567-8") == 1
    assert edit_distance("", "abc") == 3


def test_text_score_tells_a_misread_from_a_false_read() -> None:
    score = TextScore()
    truth = f"LG-1234567-{gs1_check_digit('1234567')}"
    score.add(truth, [line(truth)], 10.0)
    score.add(truth, [line(truth.replace("LG", "L0"))], 10.0)  # fails the pattern: misread, not returned
    other = f"LG-1234568-{gs1_check_digit('1234568')}"
    score.add(truth, [line(other)], 10.0)  # passes pattern and checksum: returned as the serial, wrong
    score.add(truth, [], 30.0)
    out = score.summary()
    assert (out["images"], out["exact_rate"], out["serial_valid_rate"], out["false_reads"]) == (4, 0.25, 0.25, 1)
    edits = 0 + 1 + edit_distance(other, truth) + len(truth)
    assert out["cer"] == round(edits / (4 * len(truth)), 4)


def test_read_prints_the_printed_line_and_the_recipes_fields(tmp_path, line_config_dict) -> None:
    (path,) = write_set(tmp_path / "set", 1, 4, MILD)
    truth = json.loads(path.with_suffix(".json").read_text())
    x1, y1, x2, y2 = (int(v) for v in truth["text_box"])
    box = f"{x1 - 12},{y1 - 12},{x2 - x1 + 24},{y2 - y1 + 24}"
    runner = CliRunner()
    result = runner.invoke(app, ["ocr", "read", str(path), "--text", "--text-roi", box, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert [t["text"] for t in out["lines"]] == [truth["text"]]
    assert len(out["lines"][0]["chars"]) == len(truth["text"]) and out["lines"][0]["confidence"] > 0.5
    assert "fields" not in out  # no recipe, nothing to check
    plain = runner.invoke(app, ["ocr", "read", str(path), "--text", "--text-roi", box])
    assert f"text: {truth['text']!r}" in plain.output
    bad = runner.invoke(app, ["ocr", "read", str(path), "--text-roi", "1,2,3"])
    assert bad.exit_code == 2 and "x,y,width,height" in bad.output

    # As a recipe reads it: the DataMatrix serial must match the printed line (match_text).
    config = line_config_dict()
    settings = next(iter(config["recipes"].values()))
    settings["code_roi"] = [0, 0, 640, 400]
    rule = {"symbology": "DataMatrix", "pattern": r"LG-\d{7}-\d", "match_text": True}
    settings["ocr"] = {
        "formats": ["DataMatrix"],
        "text_roi": [int(v) for v in box.split(",")],
        "fields": {"serial": rule},
    }
    good = runner.invoke(
        app, ["ocr", "read", str(path), "--config", str(write_config(tmp_path / "l.yaml", config)), "--json"]
    )
    assert good.exit_code == 0, good.output
    fields = json.loads(good.output.strip().splitlines()[-1])["fields"]
    assert fields == [{"name": "serial", "value": truth["serial"], "read": truth["serial"], "reason": "", "detail": ""}]
    settings["ocr"]["text_roi"] = [0, 0, 120, 30]  # a box with no printed line in it
    wrong = runner.invoke(app, ["ocr", "read", str(path), "--config", str(write_config(tmp_path / "w.yaml", config))])
    assert "field serial: CODE_TEXT_MISMATCH" in wrong.output


def test_eval_scores_codes_and_the_printed_line(tmp_path) -> None:
    write_set(tmp_path, 3, 4, MILD)
    result = CliRunner().invoke(app, ["ocr", "eval", str(tmp_path), "--budget-ms", "10000"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["read_rate"]["DataMatrix"] == 1.0
    text = summary["text"]
    assert (text["images"], text["exact_rate"], text["false_reads"], text["cer"]) == (3, 1.0, 0, 0.0)
    assert text["ms_p50"] > 0
    codes_only = CliRunner().invoke(app, ["ocr", "eval", str(tmp_path), "--no-text"])
    assert "text" not in json.loads(codes_only.output)


def test_text_roi_stays_inside_the_image() -> None:
    from lineguard.ocr.labels import render

    _, truth = render(MILD, 4, 0)
    truth.text_box = [-5.0, 390.0, 700.0, 420.0]
    roi = text_roi(truth, (400, 640))
    assert (roi.x, roi.y, roi.x + roi.width, roi.y + roi.height) == (0, 378, 640, 400)
