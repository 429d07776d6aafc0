"""The register handshake a PLC runs with the gateway over Modbus TCP or S7: fields, codes, their encoding.

A contract shared by the gateway's register protocols (services/gateway/registers.py and the Modbus and
S7 transports) and anything playing the PLC (lineguard.sim.modbus, lineguard.sim.s7). Plain data: no
protocol library here. docs/modbus.md and docs/s7.md are the same map for a controls engineer.

A station's fields lie in one area (a Modbus unit's holding registers, an S7 data block) at offsets the
station's configuration gives. Every number is big-endian (Modbus registers and S7 alike); a WORD is 16
bits, a DWORD 32 bits (high word first); the part id and the lot are ASCII text with the length in front:

- Modbus: one register with the length in characters, then the characters, two per register, high byte first;
- S7: a STRING[n]: a byte with the declared maximum n, a byte with the length, then the characters.

Handshake (one part at a time per station): the PLC raises `trigger` (a rising edge, 0 -> non-zero) with
`sequence`, `part_id` and `recipe` in place, and `lot`, which the PLC writes at a lot change and leaves until the
next (read with every trigger, it is the lot of every part triggered while it stands); the gateway raises `busy`;
when the verdict is known the gateway writes `verdict`, `reasons`, `result_sequence` (= the trigger's sequence)
and raises `done` while `busy` falls; the PLC reads them and acknowledges by writing `ack_sequence` =
`result_sequence`; `done` falls, and the station takes the next trigger. Both sides count a heartbeat; `error`
says why the station is in Error or why a trigger was refused (`Error` below).

Self-test (docs/drift.md): the PLC raises `selftest` (a rising edge) and the gateway judges the station's golden parts
through the live path, flagged simulated: their verdicts never show in `verdict` / `done` (no production result, no
record); `selftest_state` says how the run went (`SelfTestState` below).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from lineguard.contracts.opcua import NO_RESULT_VERDICT, RESULT_VERDICTS

WORD = "WORD"
DWORD = "DWORD"
STRING = "STRING"
PLC = "plc"  # the PLC writes the field, the gateway reads it
GATEWAY = "gateway"  # the gateway writes it, the PLC reads it

StringStyle = Literal["modbus", "s7"]

# What the PLC reads as `verdict`: lineguard.v1 Verdict values. Fail safe: only PASS (1) is a pass, and
# 0 (no result) is what a station in Error and a station between parts show.
VERDICTS = RESULT_VERDICTS
NO_RESULT = int(NO_RESULT_VERDICT)

MAX_SEQUENCE = 0xFFFFFFFF


class Error(enum.IntEnum):
    """The `error` field. 1 or 8 while the station is in Error; a refusal (2..7) from the refused trigger's rising
    edge until the trigger falls, so that every refusal is a change the PLC can see."""

    NONE = 0
    PARTNER_LOST = 1  # the PLC's heartbeat did not change for plc_heartbeat_timeout_ms (or not yet): in Error
    BUSY = 2  # a trigger while a part is in flight or its result is not acknowledged: refused
    PART_ID_TOO_LONG = 3  # the part id's length is more than its field holds: refused
    PART_ID_NOT_ASCII = 4  # the part id holds bytes other than printable ASCII: refused
    BAD_SEQUENCE = 5  # sequence 0 (it means "none"): refused
    REFUSED = 6  # the gateway could not take the trigger (the bus is away, it is stopping): trigger again
    IN_ERROR = 7  # a trigger while the station is in Error (1 or 8): refused
    SERVICE_DOWN = 8  # a service the station needs (capture, inference, ocr, decision) stopped beating: in Error
    UNKNOWN_RECIPE = 9  # the `recipe` field names no recipe's plc_recipe_number: refused, the live recipe stays
    DRIFT_WARNING = 10  # the drift watch alerts (lighting, model, a self-test changed; docs/drift.md): triggers taken
    LOT_TOO_LONG = 11  # the lot's length is more than its field holds: refused
    LOT_NOT_ASCII = 12  # the lot holds bytes other than printable ASCII: refused


class SelfTestState(enum.IntEnum):
    """The `selftest_state` field: the last golden-part self-test the PLC asked for (its `selftest` rising edge)."""

    NONE = 0  # none asked since the gateway started
    RUNNING = 1  # the golden parts are being judged
    AS_EXPECTED = 2  # every golden part got the verdict (and reasons) the station's config expects
    CHANGED = 3  # an outcome changed (or no verdict in time): the drift watch alerts too (error 10 DRIFT_WARNING)
    NOT_CONFIGURED = 4  # the station has no `selftest` in its configuration
    NOT_RUN = 5  # the run could not be made (the bus away): ask again


# Reason codes -> bits of the `reasons` DWORD. Fixed: a bit never changes its meaning (add, never renumber).
# A reason not in the table sets OTHER, so a part with reasons never shows none.
REASON_BITS: dict[str, int] = {
    "TIMEOUT": 0,  # no decision in time (the decision service's or the gateway's own deadline)
    "NO_INFERENCE": 1,
    "NO_OCR": 2,
    "CODE_MISSING": 3,
    "CODE_INVALID": 4,
    "UNKNOWN_RECIPE": 5,
    "INVALID_RESULT": 6,
    "OVERLOAD": 7,  # refused on arrival: the model could not judge the part by its deadline (a fast FAIL)
    "DEFECT_OPEN": 8,
    "DEFECT_SHORT": 9,
    "DEFECT_MOUSEBITE": 10,
    "DEFECT_SPUR": 11,
    "DEFECT_COPPER": 12,
    "DEFECT_PIN_HOLE": 13,
    "OTHER": 31,
}
OTHER_REASON = "OTHER"


def reason_bits(reasons: Iterable[str]) -> int:
    bits = 0
    for reason in reasons:
        bits |= 1 << REASON_BITS.get(reason, REASON_BITS[OTHER_REASON])
    return bits


def reasons_of(bits: int) -> list[str]:
    """The reason codes a `reasons` DWORD names, in bit order (OTHER for reasons the table lacks)."""
    return [name for name, bit in sorted(REASON_BITS.items(), key=lambda kv: kv[1]) if bits >> bit & 1]


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: str  # WORD, DWORD or STRING
    writer: str  # PLC or GATEWAY
    description: str


FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("plc_heartbeat", WORD, PLC, "the PLC counts it up (any change); the gateway watches it"),
    FieldSpec("trigger", WORD, PLC, "0 -> non-zero: a part is here (only the rising edge counts)"),
    FieldSpec("sequence", DWORD, PLC, "the PLC's part counter, 1..2^32-1, set before the trigger rises"),
    FieldSpec("recipe", WORD, PLC, "the recipe's plc_recipe_number for this part (0: the recipe prepared now)"),
    FieldSpec("ack_sequence", DWORD, PLC, "the PLC writes result_sequence here once it has read the result"),
    FieldSpec("part_id", STRING, PLC, "an id the PLC may give (carrier, tray position); ASCII, may be empty"),
    FieldSpec("selftest", WORD, PLC, "0 -> non-zero: run the station's golden-part self-test (the rising edge counts)"),
    FieldSpec("lot", STRING, PLC, "the production lot, written at a lot change and held; ASCII, may be empty (none)"),
    FieldSpec("heartbeat", WORD, GATEWAY, "the gateway counts it up every heartbeat_ms while it runs"),
    FieldSpec("busy", WORD, GATEWAY, "1 from a trigger taken until its result is written"),
    FieldSpec("done", WORD, GATEWAY, "1 while a result waits for the PLC's acknowledgement"),
    FieldSpec("verdict", WORD, GATEWAY, "1 PASS, 2 FAIL, 3 REWORK, 4 ERROR; 0 no result (never a pass)"),
    FieldSpec("reasons", DWORD, GATEWAY, "reason code bits (REASON_BITS)"),
    FieldSpec("result_sequence", DWORD, GATEWAY, "the sequence of the trigger this result answers"),
    FieldSpec("error", WORD, GATEWAY, "0 none, else an Error code"),
    FieldSpec("selftest_state", WORD, GATEWAY, "the last self-test asked: a SelfTestState (2 as expected, 3 changed)"),
)
SPECS: dict[str, FieldSpec] = {f.name: f for f in FIELDS}
PLC_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.writer == PLC)
GATEWAY_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.writer == GATEWAY)

# The default Modbus map: holding-register addresses (0-based, as on the wire; 40001 + address in 1-based
# 4xxxx notation). The PLC's fields from 0, the gateway's from 40, the lot from 50. Part id and lot: 32 characters,
# 17 registers each.
MODBUS_DEFAULTS: dict[str, int] = {
    "plc_heartbeat": 0,
    "trigger": 1,
    "sequence": 2,
    "recipe": 4,
    "ack_sequence": 5,
    "part_id": 7,
    "selftest": 24,
    "lot": 50,  # after the gateway's block (which ends at 49): the map up to 49 stays as it was before the lot
    "heartbeat": 40,
    "busy": 41,
    "done": 42,
    "verdict": 43,
    "reasons": 44,
    "result_sequence": 46,
    "error": 48,
    "selftest_state": 49,
}
# The default S7 layout: byte offsets in the data block (non-optimized). Part id: STRING[32], 34 bytes.
S7_DEFAULTS: dict[str, int] = {
    "plc_heartbeat": 0,
    "trigger": 2,
    "sequence": 4,
    "recipe": 8,
    "ack_sequence": 10,
    "part_id": 14,
    "selftest": 66,  # after the gateway's block: the map up to 66 stays as it was before the self-test fields
    "heartbeat": 48,
    "busy": 50,
    "done": 52,
    "verdict": 54,
    "reasons": 56,
    "result_sequence": 60,
    "error": 64,
    "selftest_state": 68,
    "lot": 70,  # STRING[32], 34 bytes: 70..103
}
DEFAULT_PART_ID_CHARS = 32
DEFAULT_LOT_CHARS = 32
# The most characters a part id may have anywhere: what the inspection record's `part_id` column holds (a longer one
# would make the whole record invalid, dead-lettered).
MAX_PART_ID_CHARS = 64
# The most characters a lot may have anywhere (registers, OPC UA): what the inspection record's `lot` column holds.
MAX_LOT_CHARS = 64
# The text fields and the Layout / map option that says how many characters each holds.
TEXT_CHARS: dict[str, str] = {"part_id": "part_id_chars", "lot": "lot_chars"}
TEXT_DEFAULTS: dict[str, int] = {"part_id_chars": DEFAULT_PART_ID_CHARS, "lot_chars": DEFAULT_LOT_CHARS}


class PartIdError(ValueError):
    """A text field (the part id, the lot) the PLC wrote is not one: `code` is the Error the PLC is shown."""

    def __init__(self, code: Error, message: str):
        super().__init__(message)
        self.code = code


# Each text field's name in messages, and its (too long, not ASCII) codes.
_TEXT_ERRORS: dict[str, tuple[str, Error, Error]] = {
    "part_id": ("part id", Error.PART_ID_TOO_LONG, Error.PART_ID_NOT_ASCII),
    "lot": ("lot", Error.LOT_TOO_LONG, Error.LOT_NOT_ASCII),
}


def check_text(text: str, limit: int, what: str = "lot", *, ascii_only: bool = True) -> str:
    """`text` if it is printable ASCII (unless not `ascii_only`) of at most `limit` characters; else ValueError naming
    what is wrong. For the protocols whose text comes as a string (OPC UA): the registers' rule for their fields."""
    if len(text) > limit:
        raise ValueError(f"{what} has {len(text)} characters; at most {limit}")
    if not ascii_only:
        return text
    bad = next((i for i, c in enumerate(text) if not 0x20 <= ord(c) <= 0x7E), None)
    if bad is not None:
        raise ValueError(f"{what} character {bad} is {text[bad]!r} (U+{ord(text[bad]):04X}), not printable ASCII")
    return text


@dataclass(frozen=True)
class PartIdField:
    """A text field as read (the part id, or the lot: `name`): its length field and the characters' bytes (as many
    as the field holds)."""

    length: int = 0
    data: bytes = b""
    name: str = "part_id"

    def text(self) -> str:
        """The text; PartIdError (too long, not ASCII) naming what was wrong."""
        what, too_long, not_ascii = _TEXT_ERRORS[self.name]
        if self.length > len(self.data):
            raise PartIdError(
                too_long, f"{what} length {self.length} is more than its field's {len(self.data)} characters"
            )
        raw = self.data[: self.length]
        bad = next((i for i, b in enumerate(raw) if not 0x20 <= b <= 0x7E), None)
        if bad is not None:
            raise PartIdError(not_ascii, f"{what} byte {bad} is 0x{raw[bad]:02x}, not printable ASCII")
        return raw.decode("ascii")


@dataclass
class PlcFields:
    """The PLC's fields, as one read found them."""

    plc_heartbeat: int = 0
    trigger: bool = False
    sequence: int = 0
    recipe: int = 0
    ack_sequence: int = 0
    part_id: PartIdField = field(default_factory=PartIdField)
    selftest: bool = False
    lot: PartIdField = field(default_factory=lambda: PartIdField(name="lot"))


@dataclass
class GatewayFields:
    """The gateway's fields; the reset values are the safe state (no result, not done, not a pass)."""

    heartbeat: int = 0
    busy: bool = False
    done: bool = False
    verdict: int = NO_RESULT
    reasons: int = 0
    result_sequence: int = 0
    error: int = Error.NONE
    selftest_state: int = SelfTestState.NONE


def string_size(style: StringStyle, chars: int) -> int:
    """Bytes a text field (part id, lot) of `chars` characters takes."""
    return 2 + (chars + chars % 2 if style == "modbus" else chars)


@dataclass(frozen=True)
class Layout:
    """Where a station's fields lie in its area, in bytes from the area's start (Modbus: 2 x the address)."""

    offsets: Mapping[str, int]
    part_id_chars: int
    style: StringStyle
    lot_chars: int = DEFAULT_LOT_CHARS

    def chars(self, name: str) -> int:
        """Characters the text field `name` holds."""
        return self.lot_chars if name == "lot" else self.part_id_chars

    def size(self, name: str) -> int:
        kind = SPECS[name].kind
        if kind == STRING:
            return string_size(self.style, self.chars(name))
        return 2 if kind == WORD else 4

    def span(self, names: Iterable[str]) -> tuple[int, int]:
        """(start, end) bytes covering the fields `names`."""
        names = list(names)
        start = min(self.offsets[n] for n in names)
        return start, max(self.offsets[n] + self.size(n) for n in names)

    def plc_span(self) -> tuple[int, int]:
        return self.span(PLC_FIELDS)

    # -- the gateway's side: read the PLC's fields, write its own

    def decode_plc(self, data: bytes, start: int) -> PlcFields:
        """The PLC's fields from `data`, the area's bytes from `start` on (plc_span at least)."""

        def at(name: str) -> int:
            return self.offsets[name] - start

        def word(name: str) -> int:
            return int(struct.unpack_from(">H", data, at(name))[0])

        def dword(name: str) -> int:
            return int(struct.unpack_from(">I", data, at(name))[0])

        def text(name: str) -> PartIdField:
            p, chars = at(name), self.chars(name)
            length = struct.unpack_from(">H", data, p)[0] if self.style == "modbus" else data[p + 1]
            return PartIdField(length, bytes(data[p + 2 : p + 2 + chars]), name)

        return PlcFields(
            plc_heartbeat=word("plc_heartbeat"),
            trigger=word("trigger") != 0,
            sequence=dword("sequence"),
            recipe=word("recipe"),
            ack_sequence=dword("ack_sequence"),
            part_id=text("part_id"),
            selftest=word("selftest") != 0,
            lot=text("lot"),
        )

    def encode_gateway(self, fields: GatewayFields, names: Iterable[str]) -> list[tuple[int, bytes]]:
        """The writes that put `names` of `fields` in place: (offset, bytes), adjacent fields joined into one
        write, in address order. Never covers a byte that is not one of the gateway's fields."""
        ordered = sorted(set(names), key=lambda n: self.offsets[n])
        writes: list[tuple[int, bytearray]] = []
        for name in ordered:
            value = int(getattr(fields, name))
            data = struct.pack(">H" if SPECS[name].kind == WORD else ">I", value)
            offset = self.offsets[name]
            if writes and writes[-1][0] + len(writes[-1][1]) == offset:
                writes[-1][1].extend(data)
            else:
                writes.append((offset, bytearray(data)))
        return [(offset, bytes(data)) for offset, data in writes]

    # -- the PLC's side (the simulated PLCs): write its fields, read the gateway's

    def encode_plc(self, name: str, value: int | str | bytes) -> tuple[int, bytes]:
        """One of the PLC's fields as (offset, bytes); a part id or lot is its text (ASCII; `bytes` as they are, so a
        test can write what a faulty PLC would)."""
        offset = self.offsets[name]
        kind = SPECS[name].kind
        if kind == STRING:
            n = self.chars(name)
            text = value if isinstance(value, bytes) else str(value).encode("ascii")
            chars = text[:n].ljust(n + (n % 2), b"\0")
            if self.style == "modbus":
                return offset, struct.pack(">H", len(text)) + chars
            return offset, bytes([n, min(len(text), 255)]) + chars[:n]
        return offset, struct.pack(">H" if kind == WORD else ">I", int(value))

    def decode_gateway(self, data: bytes, start: int) -> GatewayFields:
        values: dict[str, int] = {}
        for name in GATEWAY_FIELDS:
            fmt = ">H" if SPECS[name].kind == WORD else ">I"
            values[name] = int(struct.unpack_from(fmt, data, self.offsets[name] - start)[0])
        return GatewayFields(
            heartbeat=values["heartbeat"],
            busy=values["busy"] != 0,
            done=values["done"] != 0,
            verdict=values["verdict"],
            reasons=values["reasons"],
            result_sequence=values["result_sequence"],
            error=values["error"],
            selftest_state=values["selftest_state"],
        )

    def gateway_span(self) -> tuple[int, int]:
        return self.span(GATEWAY_FIELDS)


def overlap(offsets: Mapping[str, int], sizes: Mapping[str, int], name: str) -> str | None:
    """The first field among `offsets` (other than `name`) whose bytes overlap `name`'s, if any."""
    start, end = offsets[name], offsets[name] + sizes[name]
    for other, other_start in offsets.items():
        if other != name and other_start < end and start < other_start + sizes[other]:
            return other
    return None
