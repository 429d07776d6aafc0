"""The camera seam: a kind added from this module alone (CAMERAS.register, no library file edited) is
validated by the line's configuration with its own options and opened by capture; the shipped kinds'
options belong to their own kind."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any, Literal

import numpy as np
import pytest
from pydantic import Field, ValidationError

from lineguard.config import CAMERAS, CameraSettings, ConfigError, LineConfig, StationSettings, parse_config
from lineguard.contracts import new_inspection_id, now_ns
from lineguard.imaging import decode_image, encode_image
from lineguard.services.capture.sources import CapturedImage, open_source, simulator
from lineguard.v1.common_pb2 import Part

# This module is the kind: KEY, Settings and the seam's factory, as a camera module in the package declares them.
KEY = "test-pattern"


class Settings(CameraSettings):
    kind: Literal["test-pattern"] = "test-pattern"
    level: int = Field(128, ge=0, le=255, description="the grey level of every pixel")


class PatternSource:
    def __init__(self, station_id: str, settings: Settings):
        self.camera_id = f"test-pattern:{station_id}"
        self.level = settings.level

    def grab(self, part: Part) -> CapturedImage:
        image = np.full((8, 12), self.level, np.uint8)
        return CapturedImage(encode_image(image, "png"), "png", 12, 8, 1, f"test-pattern:{part.sequence}", now_ns())


def open_camera(station_id: str, settings: Settings) -> PatternSource:
    return PatternSource(station_id, settings)


@pytest.fixture(autouse=True)
def pattern_kind() -> Iterator[None]:
    # Registered for this module's tests only: other tests see the kinds the package declares.
    CAMERAS.register(sys.modules[__name__])
    yield
    CAMERAS.unregister(KEY)


Line = Callable[[object], dict[str, Any]]


@pytest.fixture
def line(line_config_dict: Callable[..., dict[str, Any]]) -> Line:
    """The demo line with its station's `camera` replaced."""

    def make(camera: object) -> dict[str, Any]:
        raw = line_config_dict()
        raw["stations"][0]["camera"] = camera
        return raw

    return make


def problems(raw: dict[str, Any]) -> list[tuple[tuple[int | str, ...], str, str]]:
    with pytest.raises(ValidationError) as err:
        LineConfig.model_validate(raw)
    return [(e["loc"], e["type"], e["msg"]) for e in err.value.errors()]


def test_a_line_config_naming_the_kind_validates_its_own_options(line: Line) -> None:
    config = LineConfig.model_validate(line({"kind": "test-pattern", "level": 200, "px_per_mm": 10.0}))
    camera = config.stations[0].camera
    assert isinstance(camera, Settings)
    assert (camera.kind, camera.level, camera.px_per_mm) == ("test-pattern", 200, 10.0)
    # A bare key takes the kind's defaults.
    assert LineConfig.model_validate(line("test-pattern")).stations[0].camera == Settings()


def test_a_wrong_option_of_the_kind_fails_with_its_field_path(line: Line) -> None:
    [(loc, kind, _)] = problems(line({"kind": "test-pattern", "level": 300}))
    assert (loc, kind) == (("stations", 0, "camera", "level"), "less_than_equal")
    # The file's check (--validate-config) names the same field.
    text = (
        "line: l1\nstations:\n  - id: s1\n    recipe: pcb-a\n    camera: {kind: test-pattern, level: 300}\n"
        "recipes:\n  pcb-a: {version: '1'}\n"
    )
    with pytest.raises(ConfigError) as err:
        parse_config(text, "line.yaml")
    assert [p.path for p in err.value.problems] == ["stations[0].camera.level"]
    # An option of another kind is not this kind's.
    [(loc, kind, _)] = problems(line({"kind": "test-pattern", "stamp_serial": False}))
    assert (loc, kind) == (("stations", 0, "camera", "stamp_serial"), "extra_forbidden")


def test_an_unknown_kind_fails_naming_the_known_kinds(line: Line) -> None:
    [(loc, _, message)] = problems(line({"kind": "webcam", "px_per_mm": 10.0}))
    assert loc == ("stations", 0, "camera")
    known = "folder, gentl, gige, replay, rtsp, simulator, test-pattern, usb"
    assert f"unknown camera kind 'webcam' (known: {known})" in message


def test_open_source_returns_the_kinds_source_which_grabs_an_image(line: Line) -> None:
    settings = LineConfig.model_validate(line({"kind": "test-pattern", "level": 77})).stations[0].camera
    source = open_source("s1", settings)
    assert isinstance(source, PatternSource) and source.camera_id == "test-pattern:s1"
    part = Part(inspection_id=new_inspection_id(), line="l1", station="s1", recipe_id="pcb-a", sequence=3)
    image = source.grab(part)
    assert (image.encoding, image.width, image.height, image.source_uri) == ("png", 12, 8, "test-pattern:3")
    pixels = decode_image(image.data, expected_encoding="png")
    assert pixels.shape[:2] == (8, 12) and (pixels == 77).all()


def test_a_station_without_a_camera_has_the_simulator() -> None:
    camera = StationSettings(id="s1", recipe="pcb-a").camera
    assert isinstance(camera, simulator.Settings) and camera == simulator.Settings()


def test_a_folder_camera_needs_its_path_and_refuses_the_simulators_options(line: Line) -> None:
    def refused(camera: dict[str, Any]) -> list[tuple[tuple[int | str, ...], str]]:
        return [(loc, kind) for loc, kind, _ in problems(line(camera))]

    assert refused({"kind": "folder"}) == [(("stations", 0, "camera", "path"), "missing")]
    assert refused({"kind": "folder", "path": ""}) == [(("stations", 0, "camera", "path"), "string_too_short")]
    assert refused({"kind": "folder", "path": "/images", "stamp_serial": True}) == [
        (("stations", 0, "camera", "stamp_serial"), "extra_forbidden")
    ]
    # And the folder camera's reference is not the simulator's.
    assert refused({"kind": "simulator", "reference": "/golden.png"}) == [
        (("stations", 0, "camera", "reference"), "extra_forbidden")
    ]
