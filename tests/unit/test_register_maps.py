"""The register protocols' maps in the line's configuration: a bad map is a config error at its field path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from lineguard.config import ConfigError, parse_config
from lineguard.contracts.registers import (
    MODBUS_DEFAULTS,
    Error,
    GatewayFields,
    Layout,
    PartIdError,
    PartIdField,
    check_text,
    reason_bits,
    reasons_of,
)
from lineguard.services.gateway.protocols.modbus import RegisterMap
from lineguard.services.gateway.protocols.s7 import DbLayout as S7Layout

LineDict = Callable[..., dict[str, Any]]


def problem(raw: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(ConfigError) as err:
        parse_config(yaml.safe_dump(raw), "line.yaml")
    found = err.value.problems[0]  # fields are checked in order: the first is the first that does not fit
    return found.path, found.message


def with_plc(line_config_dict: LineDict, plc: dict[str, Any]) -> dict[str, Any]:
    raw = line_config_dict()
    raw["stations"][0]["plc"] = plc
    return raw


def test_the_default_modbus_map_validates(line_config_dict: LineDict) -> None:
    config = parse_config(yaml.safe_dump(with_plc(line_config_dict, {"protocol": "modbus"})), "line.yaml")
    plc = config.station("s1").plc
    assert plc.protocol == "modbus" and plc.mode == "server" and plc.map.busy == MODBUS_DEFAULTS["busy"]


@pytest.mark.parametrize(
    ("map_", "path", "message"),
    [
        ({"done": 41}, "stations[0].plc.map.done", "overlaps busy (41..41)"),
        ({"reasons": 65535}, "stations[0].plc.map.reasons", "beyond address 65535"),
        # The lot's 32 characters need 17 registers from 20: into the part id's (7..23).
        ({"lot": 20}, "stations[0].plc.map.lot", "lot (registers 20..36) overlaps part_id (7..23)"),
        ({"lot_chars": 40, "lot": 30}, "stations[0].plc.map.lot", "lot (registers 30..50) overlaps heartbeat"),
        # More than the record's part_id / lot column holds (64): it would make the whole record invalid.
        ({"part_id_chars": 65}, "stations[0].plc.map.part_id_chars", "less than or equal to 64"),
        ({"lot_chars": 65}, "stations[0].plc.map.lot_chars", "less than or equal to 64"),
    ],
)
def test_a_bad_modbus_map_names_its_field(
    line_config_dict: LineDict, map_: dict[str, int], path: str, message: str
) -> None:
    found_path, found_message = problem(with_plc(line_config_dict, {"protocol": "modbus", "map": map_}))
    assert found_path == path
    assert message in found_message


def test_reason_codes_are_fixed_bits_and_unknown_ones_are_other() -> None:
    bits = reason_bits(["TIMEOUT", "DEFECT_SHORT", "SOMETHING_NEW"])
    assert bits == 1 << 0 | 1 << 9 | 1 << 31
    assert reasons_of(bits) == ["TIMEOUT", "DEFECT_SHORT", "OTHER"]
    assert reason_bits([]) == 0


def test_part_id_decoding_refuses_what_does_not_fit() -> None:
    assert PartIdField(3, b"abc\0").text() == "abc"
    with pytest.raises(PartIdError) as too_long:
        PartIdField(5, b"abcd").text()
    assert too_long.value.code is Error.PART_ID_TOO_LONG
    with pytest.raises(PartIdError) as not_ascii:
        PartIdField(2, b"a\xff").text()
    assert not_ascii.value.code is Error.PART_ID_NOT_ASCII


def test_the_lot_is_read_with_the_plcs_fields_and_refused_with_codes_of_its_own() -> None:
    for layout in (RegisterMap().layout(), S7Layout().layout()):
        start, end = layout.plc_span()
        area = bytearray(end)
        for name, value in (("part_id", "tray-1"), ("lot", "LOT-2026-12-A")):
            offset, data = layout.encode_plc(name, value)
            area[offset : offset + len(data)] = data
        fields = layout.decode_plc(bytes(area[start:]), start)
        assert (fields.part_id.text(), fields.lot.text()) == ("tray-1", "LOT-2026-12-A")
        offset, data = layout.encode_plc("lot", "L" * 33)  # one more than its 32 characters
        area[offset : offset + len(data)] = data
        with pytest.raises(PartIdError) as too_long:
            layout.decode_plc(bytes(area[start:]), start).lot.text()
        assert too_long.value.code is Error.LOT_TOO_LONG and "lot length 33" in str(too_long.value)
        offset, data = layout.encode_plc("lot", "L\xc3\xa9".encode("latin-1"))
        area[offset : offset + len(data)] = data
        with pytest.raises(PartIdError) as not_ascii:
            layout.decode_plc(bytes(area[start:]), start).lot.text()
        assert not_ascii.value.code is Error.LOT_NOT_ASCII and "lot byte 1 is 0xc3" in str(not_ascii.value)


def test_check_text_names_what_is_wrong() -> None:
    assert check_text("LOT-1", 64) == "LOT-1"
    with pytest.raises(ValueError, match="lot has 65 characters; at most 64"):
        check_text("x" * 65, 64)
    with pytest.raises(ValueError, match=r"lot character 1 is 'é' \(U\+00E9\), not printable ASCII"):
        check_text("Lé", 64)
    assert check_text("Träger", 64, "part id", ascii_only=False) == "Träger"


def test_gateway_writes_join_adjacent_fields_and_skip_the_plcs() -> None:
    layout: Layout = RegisterMap().layout()
    fields = GatewayFields(busy=False, done=True, verdict=1, reasons=0, result_sequence=7)
    writes = layout.encode_gateway(fields, ["done", "verdict", "result_sequence"])
    # done 42 and verdict 43 are adjacent; result_sequence 46..47 is not: two writes, in address order.
    assert [(offset // 2, len(data) // 2) for offset, data in writes] == [(42, 2), (46, 2)]
    assert writes[1][1] == (7).to_bytes(4)


@pytest.mark.parametrize(
    ("layout", "path", "message"),
    [
        ({"busy": 51}, "stations[0].plc.layout.busy", "starts at an even byte"),
        ({"recipe": 6}, "stations[0].plc.layout.recipe", "overlaps sequence (4..7)"),
        ({"reasons": 65534}, "stations[0].plc.layout.reasons", "beyond a DB's 65536 bytes"),
        ({"part_id_chars": 65}, "stations[0].plc.layout.part_id_chars", "less than or equal to 64"),
        ({"lot": 60}, "stations[0].plc.layout.lot", "lot (bytes 60..93) overlaps result_sequence (60..63)"),
    ],
)
def test_a_bad_s7_layout_names_its_field(
    line_config_dict: LineDict, layout: dict[str, int], path: str, message: str
) -> None:
    found_path, found_message = problem(with_plc(line_config_dict, {"protocol": "s7", "db": 5, "layout": layout}))
    assert found_path == path
    assert message in found_message
