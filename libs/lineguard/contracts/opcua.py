"""The OPC UA interface a PLC uses to trigger inspections and read verdicts.

A contract shared by the gateway (the OPC UA server) and anything playing the
PLC (the simulated PLC in lineguard.testing, a real controller's client). Names
only: no asyncua here, so documentation and other tools can read it as data.

Address space, under the Objects folder, in namespace `NAMESPACE_URI`
(string node ids `ns=<i>;s=<path>`, so a PLC can be configured by node id):

    Stations/                                   folder
      <station_id>/                             object; event notifier for its results
        Trigger(sequence UInt32, partId String) -> inspectionId String
        GetResult(sequence UInt32) -> the five Result* fields of that sequence's result
        SetLot(lot String)                      the production lot of the parts triggered from now on
        ResultSequence       UInt32    the trigger sequence of the latest result; written last
        ResultInspectionId   String
        ResultVerdict        Int32     RESULT_VERDICTS: 1 = PASS, anything else is not a pass
        ResultReasons        String    reason codes, comma separated ("" for a pass)
        ResultTimestamp      DateTime  when the gateway handed the result over (UTC)
        Busy                 Boolean   inspections in flight at this station
        Heartbeat            UInt32    +1 every HEARTBEAT_PERIOD_S while the gateway runs
        Error                String    "" while the station serves; why it is in Error (a service it needs is down)
        Warning              String    "" while none; what the drift watch alerts of (docs/drift.md); Trigger taken
        Lot                  String    the lot SetLot set ("" none, and after a gateway restart): each part carries it

Every result is also an event of type `InspectionResultEventType` (a subtype of
BaseEventType) emitted by the station object, carrying the five Result* fields
above together: a client that subscribes to events on the station object gets
every result exactly once, all fields from the same result.

Trigger answers at once whatever the bus does (the gateway publishes behind it); it
is refused with BadResourceUnavailable while the gateway stops or its backlog for the
bus is full. A PLC that reconnects reads a result it missed with GetResult: the
results of the station's last RESULTS_KEPT inspections stay readable by sequence
(BadNotFound for a sequence in flight, unknown, or older); compare the inspection id
with the one Trigger returned.
"""

from __future__ import annotations

from dataclasses import dataclass

from lineguard.v1.decision_pb2 import Verdict

NAMESPACE_URI = "urn:lineguard:gateway"

STATIONS_FOLDER = "Stations"
TRIGGER_METHOD = "Trigger"
GET_RESULT_METHOD = "GetResult"
SET_LOT_METHOD = "SetLot"
EVENT_TYPE = "InspectionResultEventType"  # browse name and string node id

RESULT_SEQUENCE = "ResultSequence"
RESULT_INSPECTION_ID = "ResultInspectionId"
RESULT_VERDICT = "ResultVerdict"
RESULT_REASONS = "ResultReasons"
RESULT_TIMESTAMP = "ResultTimestamp"
BUSY = "Busy"
HEARTBEAT = "Heartbeat"
ERROR = "Error"
WARNING = "Warning"
LOT = "Lot"

HEARTBEAT_PERIOD_S = 1.0
# How many of a station's latest results GetResult can read (the gateway's handshake remembers as many).
RESULTS_KEPT = 4096
REASONS_SEPARATOR = ","


@dataclass(frozen=True)
class Field:
    """One variable or event field: its browse name and OPC UA built-in type name."""

    name: str
    ua_type: str  # an asyncua `ua.VariantType` member name
    description: str


@dataclass(frozen=True)
class Argument:
    name: str
    ua_type: str
    description: str


# The result as a PLC sees it; the same fields as variables and as event fields.
RESULT_FIELDS: tuple[Field, ...] = (
    Field(RESULT_INSPECTION_ID, "String", "the inspection id (UUIDv7) the Trigger call returned"),
    Field(RESULT_VERDICT, "Int32", "1 PASS, 2 FAIL, 3 REWORK, 4 ERROR (0: no result yet)"),
    Field(RESULT_REASONS, "String", "reason codes, comma separated, e.g. DEFECT_SHORT,TIMEOUT"),
    Field(RESULT_TIMESTAMP, "DateTime", "when the gateway handed this result to the PLC (UTC)"),
    # Last, so a PLC polling ResultSequence reads the other fields only once they are in place.
    Field(RESULT_SEQUENCE, "UInt32", "the PLC's trigger sequence number this result answers"),
)

STATUS_FIELDS: tuple[Field, ...] = (
    Field(BUSY, "Boolean", "true while inspections triggered at this station await their result"),
    Field(HEARTBEAT, "UInt32", "incremented every second while the gateway runs; wraps at 2^32"),
    Field(ERROR, "String", "empty while the station serves; else why it is in Error (Trigger then refused)"),
    Field(
        WARNING,
        "String",
        "empty while none; else what the drift watch alerts of (lighting, model, a golden part; Trigger still taken)",
    ),
    Field(LOT, "String", "the production lot SetLot set; every part triggered from then on carries it (empty: none)"),
)

TRIGGER_INPUTS: tuple[Argument, ...] = (
    Argument(
        "sequence", "UInt32", "the PLC's part counter; calling again with a sequence in flight returns the same id"
    ),
    Argument("partId", "String", "an id the PLC may give (carrier, tray position); may be empty"),
)
TRIGGER_OUTPUTS: tuple[Argument, ...] = (Argument("inspectionId", "String", "the inspection id the result will carry"),)
GET_RESULT_INPUTS: tuple[Argument, ...] = (
    Argument("sequence", "UInt32", "the trigger sequence whose result to read (one of the last RESULTS_KEPT)"),
)
# Called at a lot change (and after connecting: a restarted gateway holds no lot); printable ASCII, at most
# lineguard.contracts.registers.MAX_LOT_CHARS characters ("" : no lot).
SET_LOT_INPUTS: tuple[Argument, ...] = (
    Argument("lot", "String", "the production lot (batch) of the parts triggered from now on; empty: none"),
)
# The result fields, in RESULT_FIELDS order (ResultSequence last).
GET_RESULT_OUTPUTS: tuple[Argument, ...] = tuple(Argument(f.name, f.ua_type, f.description) for f in RESULT_FIELDS)

# lineguard.v1 Verdict values, as the Int32 in ResultVerdict. Fail safe: only 1 is a pass.
RESULT_VERDICTS: dict[str, int] = {
    "PASS": Verdict.VERDICT_PASS,
    "FAIL": Verdict.VERDICT_FAIL,
    "REWORK": Verdict.VERDICT_REWORK,
    "ERROR": Verdict.VERDICT_ERROR,
}
NO_RESULT_VERDICT = Verdict.VERDICT_UNSPECIFIED


def station_path(station_id: str) -> str:
    """The string node id of a station object, `Stations/<station_id>`."""
    return f"{STATIONS_FOLDER}/{station_id}"


def node_path(station_id: str, name: str) -> str:
    """The string node id of a station's variable or method, e.g. `Stations/s1/ResultVerdict`."""
    return f"{station_path(station_id)}/{name}"


def join_reasons(reasons: list[str] | tuple[str, ...]) -> str:
    return REASONS_SEPARATOR.join(reasons)


def split_reasons(text: str) -> list[str]:
    return [r for r in text.split(REASONS_SEPARATOR) if r]
