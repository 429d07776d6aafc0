"""A recipe's identity fields checked against what was read: each field valid with its value, or failed
with one reason code the decision turns into a FAIL. A value is given out only when it validates: a read
that fails a check is reported as read, never as the serial."""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lineguard.config.ocr import FieldRule
from lineguard.ocr import checksums
from lineguard.ocr.codes import FoundCode

# Reason codes (the PLC, the MES rows and docs/ocr.md use them).
NO_READ = "NO_READ"
FORMAT_MISMATCH = "FORMAT_MISMATCH"
CHECKSUM = "CHECKSUM"
CODE_TEXT_MISMATCH = "CODE_TEXT_MISMATCH"
DUPLICATE_SERIAL = "DUPLICATE_SERIAL"


@dataclass(frozen=True)
class FieldOutcome:
    name: str
    value: str  # the validated value; "" unless valid
    read: str  # what was read, valid or not
    reason: str  # "" when valid
    detail: str  # why, for a person

    @property
    def valid(self) -> bool:
        return not self.reason


class SeenValues:
    """The last values of each field on a line, for DUPLICATE_SERIAL: in memory, so one process's window
    (a restarted OCR service starts empty; docs/ocr.md)."""

    def __init__(self, limit: int = 100_000) -> None:
        self._seen: dict[tuple[str, str], OrderedDict[str, None]] = {}
        self._limit = limit

    def seen(self, line: str, name: str, value: str, window: int) -> bool:
        """Whether `value` is among the field's last `window` values on `line`; then remembers it."""
        values = self._seen.setdefault((line, name), OrderedDict())
        duplicate = value in values
        values.pop(value, None)
        values[value] = None
        while len(values) > min(window, self._limit):
            values.popitem(last=False)
        return duplicate


def _candidates(rule: FieldRule, codes: Sequence[FoundCode], lines: Sequence[str]) -> tuple[list[str], str]:
    """Values read for the field, and the error of a code that decoded but holds no usable value."""
    if rule.source == "text":
        return [t for t in lines if t], ""
    values, errors = [], []
    for code in codes:
        if rule.symbology and code.symbology != rule.symbology:
            continue
        if code.error:
            errors.append(f"{code.symbology}: {code.error}")
        elif rule.ai:
            if rule.ai in code.gs1:
                values.append(code.gs1[rule.ai])
        elif code.text:
            values.append(code.text)
    return values, "; ".join(errors)


def check_value(rule: FieldRule, value: str) -> tuple[str, str]:
    """The reason code and detail of the first check `value` fails (length, pattern, checksum); ("", "") when
    it passes them."""
    if (rule.min_length and len(value) < rule.min_length) or (rule.max_length and len(value) > rule.max_length):
        return FORMAT_MISMATCH, f"{len(value)} characters, needs {rule.min_length or 1} to {rule.max_length or 'any'}"
    if rule.pattern is not None and not re.fullmatch(rule.pattern, value):
        return FORMAT_MISMATCH, f"does not match {rule.pattern!r}"
    if rule.checksum and not checksums.get(rule.checksum)(value):
        return CHECKSUM, f"wrong {rule.checksum} check digit"
    return "", ""


def validate_field(
    name: str,
    rule: FieldRule,
    codes: Sequence[FoundCode],
    lines: Sequence[str] = (),
    *,
    seen: SeenValues | None = None,
    line: str = "",
) -> FieldOutcome:
    values, error = _candidates(rule, codes, lines)
    if not values:
        if error:
            return FieldOutcome(name, "", "", FORMAT_MISMATCH, error)
        return FieldOutcome(name, "", "", NO_READ if rule.required else "", "nothing read")
    distinct = list(dict.fromkeys(values))
    if len(distinct) > 1:
        # Two codes disagreeing on one field: which one is on the part is not for the reader to guess.
        return FieldOutcome(name, "", distinct[0], FORMAT_MISMATCH, f"codes disagree: {distinct}")
    value = distinct[0]
    reason, detail = check_value(rule, value)
    if not reason and rule.match_text and value not in lines:
        reason = CODE_TEXT_MISMATCH
        detail = f"printed text {list(lines)} does not show {value!r}" if lines else "no printed text read"
    if not reason and rule.unique_window and seen is not None and seen.seen(line, name, value, rule.unique_window):
        reason, detail = DUPLICATE_SERIAL, f"seen within the last {rule.unique_window} parts on line {line!r}"
    if reason:
        return FieldOutcome(name, "", value, reason, f"{value!r}: {detail}")
    return FieldOutcome(name, value, value, "", "")


def validate(
    rules: Mapping[str, FieldRule],
    codes: Sequence[FoundCode],
    lines: Sequence[str] = (),
    *,
    seen: SeenValues | None = None,
    line: str = "",
) -> list[FieldOutcome]:
    """Every field of the recipe checked, in the recipe's order."""
    return [validate_field(n, r, codes, lines, seen=seen, line=line) for n, r in rules.items()]
