"""Names every service agrees on: subjects, streams, message ids, verdicts.

The wire messages themselves are the protobuf classes in `lineguard.v1`; this
module holds the conventions around them, so no service spells a subject or a
message id by hand.
"""

from __future__ import annotations

import time

import uuid_utils

from lineguard.v1.common_pb2 import Part, StageTiming
from lineguard.v1.decision_pb2 import Verdict

# One JetStream stream per kind of message (ARCHITECTURE.md, "Bus").
# `shadow`: a candidate model's results beside the live ones; `shadow_verdict`: the verdict it would have given.
# Neither is ever read by the gateway, so a candidate never reaches the PLC (docs/models.md, shadow mode).
KINDS: tuple[str, ...] = (
    "trigger",
    "frame",
    "inference",
    "ocr",
    "decision",
    "ack",
    "heartbeat",
    "shadow",
    "shadow_verdict",
    # A station's drift state (results' drift watch -> the gateway, a warning at the PLC) and its self-test runs
    # (gateway -> results): docs/drift.md.
    "drift",
    "selftest",
)
DEAD_KIND = "dead"
# Which candidate model runs in shadow on each line, and on what share of its parts (lineguard.registry).
SHADOW_BUCKET = "lg-model-shadow"
# The model registry's JetStream buckets (lineguard.registry): the models, and which version each line runs.
MODELS_BUCKET = "lg-models"
PROMOTED_BUCKET = "lg-model-promoted"
# The recipe store's key-value bucket (lineguard.recipes): every recipe version, and each station's active one.
RECIPES_BUCKET = "lg-recipes"

VERDICT_NAMES: dict[int, str] = {
    Verdict.VERDICT_UNSPECIFIED: "UNSPECIFIED",
    Verdict.VERDICT_PASS: "PASS",
    Verdict.VERDICT_FAIL: "FAIL",
    Verdict.VERDICT_REWORK: "REWORK",
    Verdict.VERDICT_ERROR: "ERROR",
}


def subject(kind: str, line: str, station: str) -> str:
    """`lg.<kind>.<line>.<station>`, e.g. `lg.frame.l1.s1`."""
    if kind not in KINDS:
        raise ValueError(f"unknown message kind {kind!r}; expected one of {', '.join(KINDS)}")
    for name, token in (("line", line), ("station", station)):
        if not token or any(c in token for c in ". *>\t"):
            raise ValueError(f"{name} id {token!r} cannot be part of a NATS subject")
    return f"lg.{kind}.{line}.{station}"


def line_subjects(kind: str, line: str) -> str:
    """Every station of one line: `lg.<kind>.<line>.*`."""
    return f"lg.{kind}.{line}.*"


def kind_subjects(kind: str) -> str:
    """Every subject of one kind, on every line: `lg.<kind>.>` (its stream's subjects)."""
    return f"lg.{kind}.>"


def heartbeat_subject(line: str, service: str) -> str:
    """`lg.heartbeat.<line>.<service>`: where each service of a line says it is alive."""
    return subject("heartbeat", line, service)


SELFTEST_COMMAND = "selftest_run"


def selftest_command_subject(line: str, station: str) -> str:
    """`lg.selftest_run.<line>.<station>`: where `lineguard selftest` asks the gateway to run a station's self-test
    (a plain publish: the report comes on lg.selftest.<line>.<station>)."""
    return subject("selftest", line, station).replace("lg.selftest.", f"lg.{SELFTEST_COMMAND}.", 1)


def dead_subject(kind: str) -> str:
    """Where messages of `kind` that can never succeed are copied, with the reason."""
    return f"lg.{DEAD_KIND}.{kind}"


def stream_name(kind: str) -> str:
    return f"LG_{kind.upper()}"


def msg_id(inspection_id: str, stage: str) -> str:
    """The `Nats-Msg-Id` of a stage's message: a retried publish is stored once."""
    return f"{inspection_id}:{stage}"


def new_inspection_id() -> str:
    """A UUIDv7: time-ordered, so database rows and logs sort by trigger time."""
    return str(uuid_utils.uuid7())


def now_ns() -> int:
    return time.time_ns()


def timing(stage: str, start_ns: int, end_ns: int | None = None) -> StageTiming:
    end = time.time_ns() if end_ns is None else end_ns
    return StageTiming(stage=stage, ms=(end - start_ns) / 1e6)


# The serial the simulated camera prints on each part: "LG-" + 8 digits of the
# trigger sequence. Capture stamps it; decision and the end-to-end tests check it.
SERIAL_PATTERN = r"LG-\d{8}"
_SERIAL_MODULUS = 100_000_000


def serial_for_sequence(sequence: int) -> str:
    """`LG-00000042` for sequence 42; sequences past 8 digits wrap (the PLC's counter is 32-bit)."""
    if sequence < 0:
        raise ValueError(f"a trigger sequence is never negative, got {sequence}")
    return f"LG-{sequence % _SERIAL_MODULUS:08d}"


def past_deadline(part: Part, deadline_ms: int, now: int | None = None) -> bool:
    """Whether the part's verdict is already due: by then the decision service has given
    FAIL / TIMEOUT, so work on it is wasted. A service that is behind skips such parts
    and catches up, rather than making every later part late too."""
    current = time.time_ns() if now is None else now
    return part.triggered_unix_ns > 0 and current >= part.triggered_unix_ns + deadline_ms * 1_000_000


def copy_part(part: Part) -> Part:
    out = Part()
    out.CopyFrom(part)
    return out


def verdict_name(verdict: int) -> str:
    return VERDICT_NAMES.get(verdict, "UNSPECIFIED")
