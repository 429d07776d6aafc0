"""What goes wrong when a model is loaded (the file, the backend, or the runtime it needs) or runs."""

from __future__ import annotations

from pathlib import Path

from lineguard.imaging import ImageError


class ModelLoadError(RuntimeError):
    """The model file cannot be used; the message names the file and the cause."""

    def __init__(self, path: Path | str, cause: str):
        super().__init__(f"model {path}: {cause}")
        self.path = Path(path)
        self.cause = cause


class BackendUnavailable(ModelLoadError):
    """The chosen backend's runtime is not installed here; the message names the package to install."""

    def __init__(self, path: Path | str, backend: str, install: str, detail: str):
        super().__init__(path, f"backend {backend!r} needs {install} ({detail})")
        self.backend = backend
        self.install = install


class ModelOutputError(ImageError):
    """The model's output for one image holds values that are not numbers: that image cannot be judged (NaN
    compares False with every threshold, so read as scores it would drop every box and pass the part)."""


class UnpairedInput(ImageError):
    """A paired model was given an image that does not carry its reference. Read as a paired input, a plain
    image is its own reference: the difference is blank and every defect escapes, so this is refused."""
