"""GS1 element strings (GS1 DataMatrix, GS1-128, GS1 QR) into their application identifiers.

zxing-cpp hands a GS1 symbol's bytes as the raw element string: AIs and values run together, a variable
length value ended by GS (0x1D) unless it is last. The HRI text `(01)...(10)...` is not parsed: a batch
may itself hold parentheses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from lineguard.ocr.checksums import gs1_mod10

GS = "\x1d"

# The AIs lineguard names, with their value's length: fixed (n, n) or variable (1, max).
AI_LENGTHS: dict[str, tuple[int, int]] = {
    "00": (18, 18),  # SSCC
    "01": (14, 14),  # GTIN
    "02": (14, 14),  # GTIN of contained items
    "10": (1, 20),  # batch / lot
    "11": (6, 6),  # production date YYMMDD
    "13": (6, 6),  # packaging date
    "15": (6, 6),  # best before
    "17": (6, 6),  # expiry YYMMDD
    "21": (1, 20),  # serial
    "240": (1, 30),  # additional product id
    "241": (1, 30),  # customer part number
    "30": (1, 8),  # count
    "37": (1, 8),  # count of trade items
    "90": (1, 30),  # internal
    "91": (1, 90),  # company internal
}
_DATE_AIS = {"11", "13", "15", "17"}
_CHECK_DIGIT_AIS = {"00", "01", "02"}


class GS1Error(ValueError):
    """The element string breaks GS1 syntax; the message says where."""


@dataclass(frozen=True)
class Element:
    ai: str
    value: str


def parse(raw: str) -> list[Element]:
    """The elements of a raw element string (a leading GS or `]d2`-style symbology id is skipped).

    Raises GS1Error on an unknown AI, a value too short or too long, a wrong GTIN check digit or an
    impossible date."""
    text = raw[3:] if raw.startswith("]") else raw
    text = text.lstrip(GS)
    elements = []
    pos = 0
    while pos < len(text):
        ai = next((text[pos : pos + n] for n in (2, 3, 4) if text[pos : pos + n] in AI_LENGTHS), None)
        if ai is None:
            raise GS1Error(f"unknown application identifier at {pos}: {text[pos : pos + 4]!r}")
        low, high = AI_LENGTHS[ai]
        start = pos + len(ai)
        if low == high:
            value = text[start : start + low]
            pos = start + low
            if pos < len(text) and text[pos] == GS:  # some printers end fixed fields too
                pos += 1
        else:
            end = text.find(GS, start)
            end = len(text) if end < 0 else end
            value = text[start:end]
            pos = end + 1
        if not low <= len(value) <= high or GS in value:
            raise GS1Error(f"AI ({ai}) value {value!r} has {len(value)} characters, needs {low} to {high}")
        _check_value(ai, value)
        elements.append(Element(ai, value))
    if not elements:
        raise GS1Error("empty element string")
    return elements


def _check_value(ai: str, value: str) -> None:
    if ai in _CHECK_DIGIT_AIS and not gs1_mod10(value):
        raise GS1Error(f"AI ({ai}) {value!r}: wrong check digit")
    if ai in _DATE_AIS:
        if not value.isdigit():
            raise GS1Error(f"AI ({ai}) {value!r} is not a YYMMDD date")
        yy, mm, dd = int(value[:2]), int(value[2:4]), int(value[4:])
        try:
            date(2000 + yy, mm, dd or 1)  # DD 00 means the month's end: allowed
        except ValueError:
            raise GS1Error(f"AI ({ai}) {value!r} is not a YYMMDD date") from None


def element_string(elements: dict[str, str]) -> str:
    """The HRI form `(01)...(21)...` zxing's writer takes with gs1=True."""
    return "".join(f"({ai}){value}" for ai, value in elements.items())
