"""Model versions for the registry tests: the packaged ONNX under other versions, a broken file, renamed classes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from lineguard.hashing import file_sha256
from lineguard.vision.model import packaged_model_path

MODEL_ID = "deeppcb-yolo11n"


def model_version(folder: Path, version: str, *, data: bytes | None = None, **card: Any) -> Path:
    """`folder/<version>/model.onnx` + its card: the packaged model (or `data`) as `version`."""
    source = packaged_model_path()
    path = folder / version / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    if data is None:
        shutil.copyfile(source, path)
    else:
        path.write_bytes(data)
    values = json.loads(source.with_suffix(".json").read_text())
    values.update(version=version, onnx_sha256=file_sha256(path), onnx_bytes=path.stat().st_size, **card)
    path.with_suffix(".json").write_text(json.dumps(values, indent=2))
    return path
