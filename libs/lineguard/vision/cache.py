"""Where lineguard keeps what it can make again: registry downloads, built TensorRT engines."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir(kind: str) -> Path:
    """$XDG_CACHE_HOME/lineguard/<kind>, ~/.cache when XDG_CACHE_HOME is unset."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lineguard" / kind
