"""The local line runner (what `lineguard demo` starts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lineguard.localline import LineStartError, LocalLine


def test_the_local_line_refuses_a_folder_holding_an_earlier_run(tmp_path: Path) -> None:
    (tmp_path / "nats").mkdir()
    with pytest.raises(LineStartError, match="already holds a run"):
        LocalLine(workdir=tmp_path).start()
