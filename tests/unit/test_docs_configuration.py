"""docs/configuration.md's example line is a file a reader may copy: it must validate as it stands."""

from __future__ import annotations

import re
from pathlib import Path

from lineguard.config import parse_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_example_line_validates() -> None:
    example = re.search(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert example is not None, f"{DOC} has no yaml example"
    cfg = parse_config(example.group(1), str(DOC))
    recipe = cfg.recipe(cfg.station("s1").recipe)
    # The example shows the settings a reader looks for: zones, OCR fields, the registry model, retention.
    assert recipe.zones and recipe.ocr.fields and recipe.model is not None and cfg.calendar is not None
