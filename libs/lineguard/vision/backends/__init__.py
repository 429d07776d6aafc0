"""Inference backends behind one interface, chosen by key and imported only when chosen.

    runner = load_runner(path, "onnxruntime", device="cpu", threads=2)   # or a backend's own Settings
    outputs = runner.run(batch)        # (N, 3, S, S) -> [output0, ...]

Each backend is a module (see base.py for what it declares) on the BACKENDS seam
(lineguard.config.seams); the one list of them is the package's entry points. Importing
this package imports none of them: `load_runner` imports the one named, and that
module imports its runtime (onnxruntime, tensorrt, openvino) only inside `load`."""

from __future__ import annotations

from pathlib import Path

from lineguard.config.seams import BACKENDS, BackendSettings
from lineguard.plugins import PluginError
from lineguard.vision.backends.base import Runner, TensorSpec
from lineguard.vision.errors import BackendUnavailable, ModelLoadError

__all__ = [
    "BACKENDS",
    "BackendSettings",
    "BackendUnavailable",
    "Runner",
    "TensorSpec",
    "backend_settings",
    "load_runner",
]


def backend_settings(backend: BackendSettings | str) -> BackendSettings:
    """The Settings of a backend: as given, or the defaults of the backend a key names (PluginError: no such key)."""
    if isinstance(backend, str):
        return BACKENDS.settings_class(backend)(kind=backend)
    expected = BACKENDS.settings_class(backend.kind)
    if not isinstance(backend, expected):
        raise PluginError(
            f"backend {backend.kind!r} takes {expected.__module__}.Settings, not {type(backend).__name__}"
        )
    return backend


def load_runner(
    path: str | Path, backend: BackendSettings | str = "onnxruntime", *, device: str | None = None, threads: int = 0
) -> Runner:
    """Load the model file at `path` on a backend (its Settings, or a key for its defaults) and device (None:
    the backend's default), with `threads` CPU threads (0: the runtime's); any failure is a ModelLoadError."""
    path = Path(path)
    try:
        settings = backend_settings(backend)
        load = BACKENDS.factory_of(settings.kind)
    except PluginError as exc:
        raise ModelLoadError(path, str(exc)) from None
    runner: Runner = load(path, settings, device, threads)
    return runner
