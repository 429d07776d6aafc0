"""Sample data shipped in the package: 12 DeepPCB boards (deeppcb/, MIT, see its LICENSE)."""

from importlib.resources import files
from pathlib import Path

# Each board as published: <stem>_test.jpg (with defects), <stem>_temp.jpg (its defect-free template), <stem>.txt.
SAMPLE_BOARDS = Path(str(files("lineguard.samples") / "deeppcb"))
