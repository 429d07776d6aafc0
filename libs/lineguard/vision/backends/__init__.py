"""Inference backends behind one interface, chosen by key and imported only when chosen.

    runner = load_runner(path, "onnxruntime", {"device": "cpu", "threads": 2})
    outputs = runner.run(batch)        # (N, 3, S, S) -> [output0, ...]

Each backend is a module of this package (see base.py for what it declares). Importing
this package imports none of them: `load_runner` imports the one named, and that
module imports its runtime (onnxruntime, tensorrt, openvino) only inside `load`."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lineguard.vision.backends.base import BackendOptions, Runner, TensorSpec
from lineguard.vision.errors import BackendUnavailable, ModelLoadError

# key -> module; the key is what `model.backend` says in the line's configuration.
BACKENDS: dict[str, str] = {
    "onnxruntime": "lineguard.vision.backends.onnxruntime",
    "tensorrt": "lineguard.vision.backends.tensorrt",
    "openvino": "lineguard.vision.backends.openvino",
}

__all__ = ["BACKENDS", "BackendOptions", "BackendUnavailable", "Runner", "TensorSpec", "backend_module",
           "load_runner", "make_options"]


def backend_module(key: str) -> Any:
    """The module of backend `key` (its runtime not yet imported)."""
    try:
        name = BACKENDS[key]
    except KeyError:
        raise ValueError(f"unknown backend {key!r} (known: {', '.join(BACKENDS)})") from None
    module = importlib.import_module(name)
    assert module.KEY == key, f"{name} declares KEY {module.KEY!r}, registered as {key!r}"
    return module


def make_options(key: str, values: Mapping[str, Any]) -> BackendOptions:
    """Backend `key`'s own Options from plain values; a wrong key or value is a ValueError naming it."""
    module = backend_module(key)
    try:
        return module.Options(**values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"backend {key!r} options: {problems}") from None


def load_runner(path: str | Path, key: str = "onnxruntime", options: Mapping[str, Any] | None = None) -> Runner:
    """Load the model file at `path` on backend `key`; any failure is a ModelLoadError naming the cause."""
    path = Path(path)
    try:
        module = backend_module(key)
        opts = make_options(key, options or {})
    except ValueError as exc:
        raise ModelLoadError(path, str(exc)) from None
    return module.load(path, opts)
