"""The design's layering rules (pyproject.toml [tool.importlinter]) hold."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept(tmp_path: Path) -> None:
    # The services are installed as lineguard.services from a folder of their own
    # (setup.py maps it); import-linter reads packages from one tree, so lay the
    # source out as it is installed.
    ignore = shutil.ignore_patterns("__pycache__", "*.onnx", "*.jpg", "*.png")
    shutil.copytree(ROOT / "libs" / "lineguard", tmp_path / "lineguard", ignore=ignore)
    shutil.copytree(ROOT / "services", tmp_path / "lineguard" / "services", ignore=ignore)
    lint = Path(sys.executable).parent / "lint-imports"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
    assert "Services never import each other" in result.stdout
    assert "Production code never imports lineguard.testing" in result.stdout


def library_modules() -> set[str]:
    return {
        f"lineguard.{p.stem}"
        for p in (ROOT / "libs" / "lineguard").iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()
    }


def forbidden_rule(forbidden: str) -> dict:
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    [rule] = [c for c in contracts if c["type"] == "forbidden" and forbidden in c["forbidden_modules"]]
    return rule


def test_every_library_module_is_under_the_no_services_rule() -> None:
    missing = library_modules() - set(forbidden_rule("lineguard.services")["source_modules"])
    assert not missing, f"add {sorted(missing)} to the import-linter rule in pyproject.toml"


def test_every_module_but_the_test_helpers_is_under_the_no_testing_rule() -> None:
    production = (library_modules() - {"lineguard.testing"}) | {"lineguard.services"}
    missing = production - set(forbidden_rule("lineguard.testing")["source_modules"])
    assert not missing, f"add {sorted(missing)} to the import-linter rule in pyproject.toml"
