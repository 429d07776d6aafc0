"""`lineguard bench --no-line`: the bare model on every backend this install has, as a table and one JSON object; a
backend that is not installed is a row saying so, not an error."""

from __future__ import annotations

import importlib.util
import json

from typer.testing import CliRunner

from lineguard.cli import app


def test_bench_prints_the_bare_model_per_backend_and_batch_as_json() -> None:
    done = CliRunner().invoke(app, ["bench", "--no-line", "--images", "8", "--batch", "2", "--threads", "1", "--json"])
    assert done.exit_code == 0, done.output
    figures = json.loads(done.output.strip().splitlines()[-1])
    rows = {(r["backend"], r["batch"]): r for r in figures["bare"]}
    for batch in (1, 2):
        ort = rows[("onnxruntime", batch)]
        assert ort["images_per_s"] > 0 and ort["cpu_ms_per_image"] > 0 and ort["p50_ms"] > 0
    if importlib.util.find_spec("tensorrt") is None:
        assert rows[("tensorrt", 1)]["unavailable"] == "tensorrt not installed"
    assert "line" not in figures
    assert "the bare model" in done.output
