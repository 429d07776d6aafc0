"""The JetStream streams the line uses, and their idempotent provisioning."""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from lineguard.bus.bigframes import FRAMES_STREAM, FRAMES_SUBJECTS
from lineguard.config import NatsSettings
from lineguard.contracts import DEAD_KIND, KINDS, kind_subjects, stream_name

# What a full stream does. Records the MES must get (decisions, the PLC's acks) and the dead letters are
# never dropped to make room: a publish to a full stream fails, the publisher retries and, failing that,
# dead-letters with the reason. Frames, results and triggers are worth nothing past their part's deadline:
# the oldest go first.
KEEP_WHEN_FULL: frozenset[str] = frozenset({"decision", "ack", DEAD_KIND})


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    max_age_s: float
    max_bytes: int
    duplicate_window_s: float
    max_msgs_per_subject: int = -1
    discard: DiscardPolicy = DiscardPolicy.OLD
    object_store: bool = False  # an object store bucket's stream (rollup of each object's meta, direct gets)

    def to_config(self) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            subjects=list(self.subjects),
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=self.discard,
            max_age=self.max_age_s,
            max_bytes=self.max_bytes,
            max_msgs_per_subject=self.max_msgs_per_subject,
            duplicate_window=self.duplicate_window_s,
            allow_rollup_hdrs=self.object_store,
            allow_direct=self.object_store,
        )


def line_streams(settings: NatsSettings) -> list[StreamSpec]:
    """One stream per kind (`lg.<kind>.>`), plus the dead letters (`lg.dead.>`) and the bucket of frames too big
    for a message (lineguard.bus.bigframes)."""
    specs = []
    for kind in (*KINDS, DEAD_KIND):
        specs.append(
            StreamSpec(
                name=stream_name(kind),
                subjects=(kind_subjects(kind),),
                max_age_s=settings.stream_max_age_s,
                max_bytes=settings.stream_max_bytes,
                duplicate_window_s=settings.duplicate_window_s,
                # Only the latest heartbeat of each service matters.
                max_msgs_per_subject=1 if kind == "heartbeat" else -1,
                discard=DiscardPolicy.NEW if kind in KEEP_WHEN_FULL else DiscardPolicy.OLD,
            )
        )
    # As long-lived as the frames; the oldest dropped when full, as frames are.
    specs.append(
        StreamSpec(
            name=FRAMES_STREAM,
            subjects=FRAMES_SUBJECTS,
            max_age_s=settings.stream_max_age_s,
            max_bytes=settings.stream_max_bytes,
            duplicate_window_s=settings.duplicate_window_s,
            object_store=True,
        )
    )
    return specs


async def provision_streams(js: JetStreamContext, specs: list[StreamSpec]) -> None:
    """Create each stream, or bring an existing one to the configured limits.

    Safe to run from every service at every start: the result is the same."""
    for spec in specs:
        config = spec.to_config()
        try:
            await js.stream_info(spec.name)
        except NotFoundError:
            try:
                await js.add_stream(config)
                continue
            except Exception as exc:  # another service created it a moment ago
                if "already in use" not in str(exc):
                    raise
        await js.update_stream(config)


class StreamsMissing(RuntimeError):
    """A stream the line needs was not provisioned; says which and how to make it."""


async def require_streams(js: JetStreamContext, specs: list[StreamSpec]) -> None:
    """Check that every stream exists, for a connection whose identity may not make them."""
    missing = []
    for spec in specs:
        try:
            await js.stream_info(spec.name)
        except NotFoundError:
            missing.append(spec.name)
    if missing:
        raise StreamsMissing(
            f"NATS streams {', '.join(missing)} do not exist: on a secured server the admin identity makes them "
            "(`lineguard nats provision --config LINE.yaml`)"
        )
