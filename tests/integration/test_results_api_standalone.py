"""`lineguard-api` on its own (compose's api container, the chart's api Deployment): it waits for a database that
does not answer yet, as the results service does, rather than dying with a traceback into a crash loop; a schema
it cannot serve stops it with the reason."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from lineguard.natsserver import free_port

LINEGUARD_API = str(Path(sys.executable).with_name("lineguard-api"))


def _start(tmp_path: Path, line_config_dict: Any, database_url: str) -> subprocess.Popen[str]:
    config = tmp_path / "line.yaml"
    raw = line_config_dict(database_url=database_url)
    raw["api"] = {"host": "127.0.0.1", "port": free_port()}
    config.write_text(yaml.safe_dump(raw))
    return subprocess.Popen(
        [LINEGUARD_API, "--config", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_a_database_not_answering_is_waited_for(tmp_path: Path, line_config_dict: Any) -> None:
    proc = _start(tmp_path, line_config_dict, f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/lineguard")
    try:
        time.sleep(8)  # the old code died within a second or two, its traceback on stderr
        assert proc.poll() is None, proc.communicate()[1][-3000:]
    finally:
        proc.kill()
        _, err = proc.communicate()
    assert "Traceback" not in err, err[-3000:]


def test_a_database_without_the_schema_stops_it_with_what_to_run(tmp_path: Path, line_config_dict: Any) -> None:
    proc = _start(tmp_path, line_config_dict, f"sqlite:///{tmp_path / 'empty.db'}")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err[-3000:]
    assert "lineguard db upgrade" in err and "Traceback" not in err, err[-3000:]
