"""`lineguard drift baseline` through the command line on a real SQLite database: the bins of what it stores."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
import yaml
from typer.testing import CliRunner

from lineguard.cli import app
from lineguard.drift.store import latest_baseline
from lineguard.services.results.db import upgrade_database


def test_a_baseline_has_the_lines_drift_bins_unless_bins_says_otherwise(tmp_path: Path, line_config_dict) -> None:
    url = f"sqlite:///{tmp_path / 'mes.db'}"
    upgrade_database(url)
    config = tmp_path / "line.yaml"
    config.write_text(yaml.safe_dump(line_config_dict(database_url=url, drift={"bins": 4})))
    engine = sa.create_engine(url)
    try:
        for extra, bins in (([], 4), (["--bins", "6"], 6)):
            made = CliRunner().invoke(app, ["drift", "baseline", "--station", "s1", "-c", str(config), *extra])
            assert made.exit_code == 0, made.output
            baseline = latest_baseline(engine, "s1")
            assert baseline is not None and len(baseline.histograms["brightness"].expected) == bins, extra
    finally:
        engine.dispose()
