"""The gentl camera kind without a GenTL producer (none exists on this machine or in Debian): the settings →
SFNC node writes, a buffer component → pixels with values known exactly, the settings' errors by field, and
opening against a real harvesters Harvester that has no .cti to load."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from lineguard.config import CAMERAS
from lineguard.services.capture.sources import CameraError
from lineguard.services.capture.sources.gentl import (
    ENV,
    EXECUTE,
    GentlSource,
    Settings,
    apply,
    component_image,
    genicam_errors,
    node_writes,
    producer_files,
)


def settings(**options: Any) -> Settings:
    return Settings.model_validate({"kind": "gentl", "serial": "12345", **options})


# --- settings -> node writes


def test_software_trigger_with_roi_exposure_and_gain_writes_the_sfnc_nodes_in_order() -> None:
    s = settings(pixel_format="Mono12", roi={"x": 16, "y": 8, "width": 640, "height": 480}, exposure_us=250, gain=3)
    assert node_writes(s, s.exposure_us, s.gain) == [
        ("TriggerMode", "Off"),
        ("PixelFormat", "Mono12"),
        ("OffsetX", 0),
        ("OffsetY", 0),
        ("Width", 640),
        ("Height", 480),
        ("OffsetX", 16),
        ("OffsetY", 8),
        ("ExposureAuto", "Off"),
        ("ExposureTime", 250.0),
        ("GainAuto", "Off"),
        ("Gain", 3.0),
        ("TriggerSelector", "FrameStart"),
        ("TriggerSource", "Software"),
        ("TriggerMode", "On"),
    ]


def test_a_line_trigger_leaves_what_is_not_asked_as_the_camera_has_it() -> None:
    s = settings(trigger="hardware", hardware_source="Line1")
    assert node_writes(s) == [
        ("TriggerMode", "Off"),
        ("PixelFormat", "Mono8"),
        ("TriggerSelector", "FrameStart"),
        ("TriggerSource", "Line1"),
        ("TriggerMode", "On"),
    ]


class Node:
    def __init__(self, refuse: type[Exception] | None = None):
        self.refuse = refuse
        self.values: list[object] = []

    @property
    def value(self) -> object:
        return self.values[-1]

    @value.setter
    def value(self, value: object) -> None:
        if self.refuse:
            raise self.refuse("out of range")
        self.values.append(value)

    def execute(self) -> None:
        self.values.append("executed")


class NodeMap:
    """A camera's nodes by name, as harvesters' node_map exposes them (attributes)."""

    def __init__(self, **nodes: Node):
        self.__dict__.update(nodes)


def test_apply_writes_values_executes_commands_and_skips_auto_features_a_camera_lacks() -> None:
    exposure, trigger, mode = Node(), Node(), Node()
    apply(
        NodeMap(ExposureTime=exposure, TriggerSoftware=trigger, TriggerMode=mode),
        [
            ("ExposureAuto", "Off"),
            ("ExposureTime", 250.0),
            ("TriggerMode", "Off"),
            ("TriggerMode", "On"),
            ("TriggerSoftware", EXECUTE),
        ],
        (RuntimeError,),
    )
    assert (exposure.values, mode.values, trigger.values) == ([250.0], ["Off", "On"], ["executed"])


def test_apply_names_the_feature_missing_or_refused() -> None:
    with pytest.raises(CameraError, match=r"no feature Gain \(to set it to 3.0\)"):
        apply(NodeMap(), [("Gain", 3.0)], (RuntimeError,))
    with pytest.raises(CameraError, match=r"refused ExposureTime = 9000000000.0: out of range"):
        apply(NodeMap(ExposureTime=Node(RuntimeError)), [("ExposureTime", 9e9)], (RuntimeError,))


def test_genicams_own_refusal_is_a_camera_error() -> None:
    genapi = pytest.importorskip("genicam.genapi", reason="genicam is not installed (pip install 'lineguard[gentl]')")
    with pytest.raises(CameraError, match=r"refused Gain = 99.0: out of range"):
        apply(NodeMap(Gain=Node(genapi.OutOfRangeException)), [("Gain", 99.0)], genicam_errors())


# --- buffer component -> pixels


def test_mono8_becomes_a_grey_image_copied_out_of_the_buffer() -> None:
    data = np.arange(12, dtype=np.uint8)
    image = component_image(4, 3, "Mono8", data)
    assert image.dtype == np.uint8 and image.shape == (3, 4)
    assert image.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    data[:] = 99  # the buffer goes back to the producer and is refilled
    assert image[0, 0] == 0


@pytest.mark.parametrize("fmt, top", [("Mono10", 1023), ("Mono12", 4095), ("Mono16", 65535)])
def test_wide_mono_keeps_its_values_in_uint16_from_harvesters_array_or_raw_bytes(fmt: str, top: int) -> None:
    values = np.array([0, 1, 256, top, 7, top - 1], np.uint16)
    assert component_image(3, 2, fmt, values).tolist() == [[0, 1, 256], [top, 7, top - 1]]
    raw = np.frombuffer(values.astype("<u2").tobytes(), np.uint8)  # PFNC's little-endian bytes
    image = component_image(3, 2, fmt, raw)
    assert image.dtype == np.uint16 and image.tolist() == [[0, 1, 256], [top, 7, top - 1]]


def test_bayer_rg8_is_demosaiced_to_bgr() -> None:
    mosaic = np.empty((8, 8), np.uint8)
    mosaic[0::2, 0::2] = 200  # R
    mosaic[0::2, 1::2] = mosaic[1::2, 0::2] = 100  # G
    mosaic[1::2, 1::2] = 50  # B
    image = component_image(8, 8, "BayerRG8", mosaic.reshape(-1))
    assert image.shape == (8, 8, 3)
    assert (image[2:-2, 2:-2] == (50, 100, 200)).all()  # B, G, R: uniform planes interpolate exactly


def test_rgb8_is_swapped_to_bgr_and_bgr8_is_kept() -> None:
    pixels = np.array([10, 20, 30, 40, 50, 60], np.uint8)
    assert component_image(2, 1, "RGB8", pixels).tolist() == [[[30, 20, 10], [60, 50, 40]]]
    assert component_image(2, 1, "BGR8", pixels).tolist() == [[[10, 20, 30], [40, 50, 60]]]


def test_an_unknown_format_or_a_short_buffer_is_refused_by_name() -> None:
    with pytest.raises(CameraError, match=r"pixel format 'YCbCr422_8', not one of Mono8, Mono10"):
        component_image(2, 2, "YCbCr422_8", np.zeros(8, np.uint8))
    with pytest.raises(CameraError, match=r"frame holds 6 bytes, 2x2 Mono16 needs 8"):
        component_image(2, 2, "Mono16", np.zeros(3, np.uint16))


# --- configuration


def errors(**options: Any) -> list[tuple[tuple[int | str, ...], str]]:
    with pytest.raises(ValidationError) as err:
        Settings.model_validate({"kind": "gentl", **options})
    return [(e["loc"], e["msg"]) for e in err.value.errors()]


def test_the_kind_is_declared_on_the_camera_seam() -> None:
    assert CAMERAS.settings_class("gentl") is Settings


def test_a_missing_cti_file_is_an_error_of_the_cti_field(tmp_path: Path) -> None:
    [(loc, message)] = errors(serial="1", cti=[str(tmp_path / "ProducerU3V.cti")])
    assert loc == ("cti",)
    assert f"no GenTL producer file {tmp_path / 'ProducerU3V.cti'}" in message and "vendor's SDK" in message


def test_selector_trigger_and_format_errors_say_what_is_wrong() -> None:
    [(_, message)] = errors()
    assert "exactly one of serial, user_id or model (got none)" in message
    [(_, message)] = errors(serial="1", model="acA1300")
    assert "(got ['serial', 'model'])" in message
    [(_, message)] = errors(serial="1", trigger="hardware")
    assert "trigger: hardware needs hardware_source" in message
    [(_, message)] = errors(serial="1", pixel_format="Mono12", encoding="jpeg")
    assert "16-bit pixels: only encoding png" in message
    [(_, message)] = errors(serial="1", pixel_format="YUV422_8")
    assert "pixel_format YUV422_8 is not one of" in message
    assert settings(serial=None, model="acA1300-200um").search_key == {"model": "acA1300-200um"}
    assert settings(serial=None, user_id="top").search_key == {"user_defined_name": "top"}


def test_producers_come_from_the_folders_genicam_gentl64_path_lists(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "Producer.cti").write_bytes(b"")
    (tmp_path / "a" / "readme.txt").write_bytes(b"")
    env = {ENV: os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "absent")])}
    assert producer_files(settings(), env) == ([tmp_path / "a" / "Producer.cti"], [f"{ENV}={env[ENV]!r}"])
    assert producer_files(settings(), {}) == ([], [f"{ENV} (not set)"])
    given = settings(cti=[str(tmp_path / "a" / "Producer.cti")])
    assert producer_files(given, env) == ([tmp_path / "a" / "Producer.cti"], [str(tmp_path / "a" / "Producer.cti")])


# --- opening without a producer


def test_opening_without_a_producer_fails_naming_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("harvesters.core", reason="harvesters is not installed (pip install 'lineguard[gentl]')")
    monkeypatch.setenv(ENV, str(tmp_path))  # a folder with no .cti in it
    with pytest.raises(CameraError) as err:
        GentlSource("s1", settings())
    assert str(err.value) == (
        f"camera gentl:s1 (serial_number 12345): no GenTL producer (.cti) found at {ENV}={str(tmp_path)!r}: "
        "install your camera vendor's SDK (it installs the .cti and sets GENICAM_GENTL64_PATH)"
    )
    monkeypatch.delenv(ENV)
    with pytest.raises(CameraError, match=rf"found at {ENV} \(not set\)"):
        GentlSource("s1", settings())


def test_a_cti_that_is_no_producer_fails_at_open_naming_it(tmp_path: Path) -> None:
    pytest.importorskip("harvesters.core", reason="harvesters is not installed (pip install 'lineguard[gentl]')")
    bad = tmp_path / "Producer.cti"
    bad.write_bytes(b"not a shared library")
    with pytest.raises(CameraError, match=rf"the GenTL producer {bad} does not load \(.*\): install your camera"):
        GentlSource("s1", settings(cti=[str(bad)]))
