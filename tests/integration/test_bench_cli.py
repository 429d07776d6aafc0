"""`lineguard bench --no-line`: the bare model on every backend this install has, as a table and one JSON object; a
backend that is not installed is a row saying so, not an error.

Run as its own process, as a user runs it: a backend's native library that crashes (OpenVINO's Core once segfaulted
inside the test process, beside other tests' native threads) fails this test instead of ending the whole run."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys


def test_bench_prints_the_bare_model_per_backend_and_batch_as_json() -> None:
    argv = ["bench", "--no-line", "--images", "8", "--batch", "2", "--threads", "1", "--json"]
    done = subprocess.run(
        [sys.executable, "-c", "from lineguard.cli import main; main()", *argv],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    rows = {(r["backend"], r["batch"]): r for r in figures["bare"]}
    for batch in (1, 2):
        ort = rows[("onnxruntime", batch)]
        assert ort["images_per_s"] > 0 and ort["cpu_ms_per_image"] > 0 and ort["p50_ms"] > 0
    if importlib.util.find_spec("tensorrt") is None:
        assert rows[("tensorrt", 1)]["unavailable"] == "tensorrt not installed"
    assert "line" not in figures
    assert "the bare model" in done.stdout
