"""Configuration: YAML + environment, and errors that name the file line and field path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lineguard.config import ConfigError, load_config, parse_config


@pytest.fixture
def good_yaml(line_config_dict) -> str:
    """The demo line's configuration as a file holds it."""
    return yaml.safe_dump(line_config_dict(database_url="sqlite:///x.db"), sort_keys=False)


def test_demo_config_is_valid(good_yaml: str) -> None:
    cfg = parse_config(good_yaml)
    assert cfg.station("s1").recipe == "pcb-a"
    assert cfg.recipe("pcb-a").classes["short"].verdict == "fail"


def test_wrong_type_names_line_and_path(good_yaml: str) -> None:
    text = good_yaml.replace("px_per_mm: 48.0", "px_per_mm: lots")
    line = text.splitlines().index("    px_per_mm: lots") + 1
    with pytest.raises(ConfigError) as err:
        parse_config(text, "line.yaml")
    [problem] = err.value.problems
    assert problem.path == "stations[0].camera.px_per_mm"
    assert problem.line == line
    assert f"line.yaml:{line}: stations[0].camera.px_per_mm: Input should be a valid number" in str(err.value)
    assert "'lots'" in str(err.value)


def test_unknown_field_and_unknown_recipe_are_reported(good_yaml: str) -> None:
    text = good_yaml.replace("recipe: pcb-a", "recipe: pcb-z").replace(
        "kind: simulator", "kind: simulator\n    exposure_us: 100"
    )
    with pytest.raises(ConfigError) as err:
        parse_config(text, "line.yaml")
    rendered = str(err.value)
    assert "stations[0].camera.exposure_us: unknown field" in rendered
    text = good_yaml.replace("recipe: pcb-a", "recipe: pcb-z")
    with pytest.raises(ConfigError, match="names recipe 'pcb-z', which is not defined"):
        parse_config(text)


def test_bad_yaml_and_missing_file() -> None:
    with pytest.raises(ConfigError, match=r"<string>:2: : not valid YAML|not valid YAML"):
        parse_config("line: l1\n  bad: [indent")
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config("/nonexistent/line.yaml")


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch, good_yaml: str) -> None:
    monkeypatch.setenv("LINEGUARD_NATS__URL", "nats://elsewhere:4222")
    monkeypatch.setenv("LINEGUARD_DATABASE__URL", "postgresql+psycopg://db/mes")
    cfg = parse_config(good_yaml)
    assert cfg.nats.url == "nats://elsewhere:4222"
    assert cfg.database.url == "postgresql+psycopg://db/mes"
    assert cfg.nats.max_deliver == 5  # the rest of the section is kept


def test_environment_value_of_wrong_type_is_an_error(monkeypatch: pytest.MonkeyPatch, good_yaml: str) -> None:
    monkeypatch.setenv("LINEGUARD_NATS__MAX_DELIVER", "many")
    with pytest.raises(ConfigError, match=r"nats\.max_deliver"):
        parse_config(good_yaml)


@pytest.mark.parametrize(
    "command", [["lineguard", "validate-config"], ["lineguard-decision", "--validate-config", "--config"]]
)
def test_validate_config_commands(tmp_path: Path, command: list[str], good_yaml: str) -> None:
    bin_dir = Path(sys.executable).parent
    good = tmp_path / "good.yaml"
    good.write_text(good_yaml)
    ok = subprocess.run([str(bin_dir / command[0]), *command[1:], str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(good_yaml.replace("deadline_ms: 3000", "deadline_ms: soon"))
    fail = subprocess.run([str(bin_dir / command[0]), *command[1:], str(bad)], capture_output=True, text=True)
    assert fail.returncode == 2
    assert "recipes.pcb-a.deadline_ms: Input should be a valid integer" in fail.stderr
    assert f"{bad}:" in fail.stderr
