"""The optional extras the model tools need (pyproject.toml): checked before any work, so a command run without
one stops at once and says what to install, not with an ImportError after the slow part. find_spec, not an import:
Ultralytics imported before offline_ultralytics has set its environment writes its settings where it likes, and
torch alone takes seconds to import."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence


class ExtraMissing(RuntimeError):
    """Modules of an extra are not installed (a run-time install); the message names them and the extra."""


def require_extra(extra: str, modules: Sequence[str], needed_by: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ExtraMissing(
            f"{needed_by} needs {', '.join(missing)}: install lineguard[{extra}] (pip install 'lineguard[{extra}]')"
        )
