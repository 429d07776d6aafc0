"""Who may publish and subscribe to what on the bus: the one table, for the server's config and the docs.

Every service signs in with its own identity (an nkey, `lineguard.bus.credentials`) and may publish only its
own kinds, its heartbeat and the dead letters of what it consumes; it reads only through its own durable
consumers and its own reply inbox (`_INBOX.<identity>.>`, so no one reads another's replies or pull deliveries).
Two identities are people's, not services': `admin` makes the streams and the registry's buckets (`lineguard
nats provision`), `operator` writes the model registry (`lineguard model push / promote`) and the recipe store
(`lineguard recipe push / activate`; the decision service and the gateway read it). Nobody else may write
either; nobody may delete a stream.

`server_authorization(keys, line)` renders the `authorization { users = [...] }` block nats-server reads;
`markdown_table(line)` is the table docs/security.md shows (a test keeps the two the same)."""

from __future__ import annotations

from dataclasses import dataclass

from lineguard.bus.bigframes import FRAMES_BUCKET, FRAMES_STREAM
from lineguard.contracts import (
    DEAD_KIND,
    KINDS,
    MODELS_BUCKET,
    PROMOTED_BUCKET,
    RECIPES_BUCKET,
    SELFTEST_COMMAND,
    SHADOW_BUCKET,
    dead_subject,
    heartbeat_subject,
    line_subjects,
    stream_name,
)

API = "$JS.API"
MODELS_STREAM = f"OBJ_{MODELS_BUCKET}"
PROMOTED_STREAM = f"KV_{PROMOTED_BUCKET}"
RECIPES_STREAM = f"KV_{RECIPES_BUCKET}"
SHADOW_STREAM = f"KV_{SHADOW_BUCKET}"
# The kinds' streams, the dead letters and the bucket of frames too big for a message (lineguard.bus.bigframes).
LINE_STREAMS = (*(stream_name(kind) for kind in (*KINDS, DEAD_KIND)), FRAMES_STREAM)


@dataclass(frozen=True)
class Role:
    """What one service does on the bus: the kinds it consumes and produces."""

    consumes: tuple[str, ...]
    produces: tuple[str, ...]
    reads_registry: bool = False
    reads_recipes: bool = False  # the recipe store: versions, and each station's active one (lineguard.recipes)
    watches_heartbeats: bool = False  # a plain subscription to every service's heartbeat on the line
    # Which parts' images are taken: the line's frames through a headers-only durable consumer (the message id names
    # the part; the image never travels to it). NATS cannot hold a consumer to headers only: the code does.
    watches_captures: bool = False
    # `lineguard selftest` (the operator) asks it to run a station's self-test: a plain subscription.
    takes_selftest_commands: bool = False
    # Frames over nats.inline_image_max_bytes: their images in the lg-frames bucket (lineguard.bus.bigframes).
    # Capture writes them (new names only: it never purges or deletes); the frames' readers read them.
    writes_big_frames: bool = False
    reads_big_frames: bool = False


# The services, as the code wires them (`ctx.consume(...)`, `ctx.publish(...)` in services/<name>/service.py).
SERVICE_ROLES: dict[str, Role] = {
    "capture": Role(consumes=("trigger",), produces=("frame",), writes_big_frames=True),
    # The candidate model's results (shadow) and the verdict it would give (shadow_verdict) never reach the gateway.
    "inference": Role(
        consumes=("frame",), produces=("inference", "shadow"), reads_registry=True, reads_big_frames=True
    ),
    "ocr": Role(consumes=("frame",), produces=("ocr",), reads_big_frames=True),
    "decision": Role(
        consumes=("trigger", "inference", "ocr", "shadow"), produces=("decision", "shadow_verdict"), reads_recipes=True
    ),
    # The gateway puts its stations in Error while a service they need is silent (services/gateway/health.py).
    # It tells OPC 40100 PLCs when a part's image is taken (AcquisitionDone, services/gateway/captures.py).
    # It shows each station's drift at its PLC (a warning) and runs the golden-part self-tests (docs/drift.md).
    "gateway": Role(
        consumes=("decision", "drift"),
        produces=("trigger", "ack", "selftest"),
        reads_recipes=True,
        watches_heartbeats=True,
        watches_captures=True,
        takes_selftest_commands=True,
    ),
    # frame: the image archive reads the stored frames after the fact (services/results/archive/archiver.py).
    # drift / selftest: the drift watch publishes each station's drift state and reads the gateway's self-tests.
    "results": Role(
        consumes=("decision", "ack", "shadow_verdict", "frame", "selftest"), produces=("drift",), reads_big_frames=True
    ),
}


@dataclass(frozen=True)
class SideSubscription:
    """Plain subscriptions to a line's kinds, nothing stored or acked for them (lineguard.bus.side): they add
    nothing to a part's path."""

    kinds: tuple[str, ...]
    purpose: str  # what it is for, in the docs' table


SIDE_SUBSCRIPTIONS: dict[str, SideSubscription] = {
    # The dashboard follows the line live (services/results/dashboard/follow.py).
    "results": SideSubscription(("frame", "decision", "ack", "heartbeat"), "the dashboard's live view"),
    # The frame services skip a part already decided (lineguard.runtime.decided).
    "inference": SideSubscription(("decision",), "a part already decided is not inferred"),
    "ocr": SideSubscription(("decision",), "a part already decided is not read"),
}
ADMIN = "admin"
OPERATOR = "operator"
IDENTITIES: tuple[str, ...] = (*SERVICE_ROLES, OPERATOR, ADMIN)


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


def inbox_prefix(identity: str) -> str:
    """Where an identity's replies (stream acks, API answers, pull deliveries) come: its own, read by it alone."""
    return f"_INBOX.{identity}"


def durable_name(service: str, kind: str) -> str:
    """The durable consumer a service reads `kind` through (lineguard.bus.worker.Worker's default)."""
    return f"{service}-{kind}"


def _consumer(service: str, kind: str, line: str) -> list[str]:
    """Read one kind through the service's own durable: make / look it up, pull, ack, and dead-letter."""
    stream, durable = stream_name(kind), durable_name(service, kind)
    return [
        f"{API}.CONSUMER.INFO.{stream}.{durable}",
        # nats-py names the filter in the subject: the consumer can only ever filter this line's subjects.
        f"{API}.CONSUMER.CREATE.{stream}.{durable}.lg.{kind}.{line}.*",
        f"{API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
        dead_subject(kind),
    ]


def _producer(kind: str, line: str) -> list[str]:
    # MSG.GET of its own stream: a duplicate ack is compared with the stored message (lineguard.runtime.duplicates).
    return [f"lg.{kind}.{line}.*", f"{API}.STREAM.MSG.GET.{stream_name(kind)}"]


def _registry_read() -> list[str]:
    """Read models and promotions."""
    return _bucket_read(MODELS_STREAM, PROMOTED_STREAM, SHADOW_STREAM)


def _recipes_read() -> list[str]:
    """Read recipe versions and activations (get, and the watch of a line's activations)."""
    return _bucket_read(RECIPES_STREAM)


def _bucket_read(*streams: str) -> list[str]:
    """Read buckets: look-ups and the ordered consumers nats-py's object store and KV watch use."""
    subjects = [f"{API}.STREAM.NAMES"]
    for stream in streams:
        subjects += [
            f"{API}.STREAM.INFO.{stream}",
            f"{API}.STREAM.MSG.GET.{stream}",
            f"{API}.DIRECT.GET.{stream}.>",
            f"{API}.CONSUMER.CREATE.{stream}",
            f"{API}.CONSUMER.CREATE.{stream}.>",
            f"{API}.CONSUMER.INFO.{stream}.*",
            f"{API}.CONSUMER.DELETE.{stream}.*",
            f"$JS.FC.{stream}.>",
        ]
    return subjects


def _big_frames_write() -> list[str]:
    """Put new objects: chunks and meta, and the look-up of a name's meta that put does first."""
    return [
        f"$O.{FRAMES_BUCKET}.>",
        f"{API}.STREAM.INFO.{FRAMES_STREAM}",
        f"{API}.STREAM.MSG.GET.{FRAMES_STREAM}",
        f"{API}.DIRECT.GET.{FRAMES_STREAM}.>",
    ]


def _registry_write(line: str) -> list[str]:
    # Models are shared by every line; what a line runs is its own key: one operator key per line, which may
    # promote (and start shadow runs) on that line only, so a record's author is that line's operator.
    return [
        f"$O.{MODELS_BUCKET}.>",
        f"{API}.STREAM.PURGE.{MODELS_STREAM}",  # an object written again drops its earlier chunks
        f"$KV.{PROMOTED_BUCKET}.{line}",
        f"$KV.{SHADOW_BUCKET}.{line}",
    ]


def _selftest_commands(line: str) -> str:
    return f"lg.{SELFTEST_COMMAND}.{line}.*"


def _recipes_write() -> list[str]:
    return [f"$KV.{RECIPES_BUCKET}.>"]


def _admin() -> list[str]:
    """Provision: make and update the line's streams and the registry's buckets, and look at them. No deletes."""
    subjects = [f"{API}.INFO", f"{API}.STREAM.NAMES", f"{API}.STREAM.LIST"]
    for stream in (*LINE_STREAMS, MODELS_STREAM, PROMOTED_STREAM, SHADOW_STREAM, RECIPES_STREAM):
        subjects += [
            f"{API}.STREAM.CREATE.{stream}",
            f"{API}.STREAM.UPDATE.{stream}",
            f"{API}.STREAM.INFO.{stream}",
            f"{API}.CONSUMER.LIST.{stream}",
            f"{API}.CONSUMER.INFO.{stream}.*",
        ]
    return subjects


def permissions(identity: str, line: str) -> Permissions:
    """What `identity` may publish and subscribe to on line `line`."""
    if identity == ADMIN:
        publish = _admin()
    elif identity == OPERATOR:
        publish = [*_registry_read(), *_registry_write(line), *_recipes_read(), *_recipes_write()]
        publish.append(_selftest_commands(line))
    elif identity in SERVICE_ROLES:
        role = SERVICE_ROLES[identity]
        # Every line stream's info: a service checks at start that the streams it needs were provisioned.
        publish = [heartbeat_subject(line, identity), *(f"{API}.STREAM.INFO.{s}" for s in LINE_STREAMS)]
        for kind in role.produces:
            publish += _producer(kind, line)
        for kind in role.consumes:
            publish += _consumer(identity, kind, line)
        if role.reads_registry:
            publish += _registry_read()
        if role.reads_recipes:
            publish += _recipes_read()
        if role.watches_captures:  # its own durable on the frames; it dead-letters nothing
            publish += [s for s in _consumer(identity, "frame", line) if s != dead_subject("frame")]
        if role.writes_big_frames:
            publish += _big_frames_write()
        if role.reads_big_frames:
            publish += _bucket_read(FRAMES_STREAM)
    else:
        raise KeyError(f"no NATS identity {identity!r} (known: {', '.join(IDENTITIES)})")
    subscribe = [f"{inbox_prefix(identity)}.>"]
    if identity in SERVICE_ROLES and SERVICE_ROLES[identity].watches_heartbeats:
        subscribe.append(f"lg.heartbeat.{line}.*")
    if identity in SIDE_SUBSCRIPTIONS:
        subscribe += [f"lg.{kind}.{line}.*" for kind in SIDE_SUBSCRIPTIONS[identity].kinds]
    if identity in SERVICE_ROLES and SERVICE_ROLES[identity].takes_selftest_commands:
        subscribe.append(_selftest_commands(line))
    if identity == OPERATOR:  # the self-test's report, which `lineguard selftest` waits for
        subscribe.append(line_subjects("selftest", line))
    return Permissions(publish=tuple(dict.fromkeys(publish)), subscribe=tuple(subscribe))


def _quoted(subjects: tuple[str, ...]) -> str:
    return ", ".join(f'"{s}"' for s in subjects)


def server_authorization(public_keys: dict[str, str], line: str) -> str:
    """The `authorization` block for nats-server: each identity's nkey and what it may do; nobody else gets in."""
    missing = [identity for identity in IDENTITIES if identity not in public_keys]
    if missing:
        raise KeyError(f"no public key for {', '.join(missing)}")
    users = []
    for identity in IDENTITIES:
        allowed = permissions(identity, line)
        users.append(
            f"    # {identity}\n"
            f'    {{nkey: "{public_keys[identity]}", permissions: {{\n'
            f"      publish: {{allow: [{_quoted(allowed.publish)}]}}\n"
            f"      subscribe: {{allow: [{_quoted(allowed.subscribe)}]}}\n"
            "    }}"
        )
    return (
        f"# lineguard line {line}: an nkey per identity (lineguard.bus.permissions); written by lineguard nats creds.\n"
        "authorization {\n  users = [\n" + "\n".join(users) + "\n  ]\n}\n"
    )


def _summary(identity: str, line: str) -> tuple[str, str]:
    """What an identity may publish, and read, in a reader's words (the table in docs/security.md)."""
    if identity == ADMIN:
        return (
            "make / update the line's streams, the registry's buckets and the recipe store (no delete)",
            "stream and consumer info",
        )
    if identity == OPERATOR:
        return (
            f"the model registry: `$O.{MODELS_BUCKET}.>`, `$KV.{PROMOTED_BUCKET}.{line}`, "
            f"`$KV.{SHADOW_BUCKET}.{line}`; "
            f"the recipe store: `$KV.{RECIPES_BUCKET}.>`; self-test commands `{_selftest_commands(line)}`",
            f"the model registry, the recipe store, `{line_subjects('selftest', line)}` (subscribed)",
        )
    role = SERVICE_ROLES[identity]
    produced = [f"`lg.{kind}.{line}.*`" for kind in role.produces]
    dead = [f"`{dead_subject(kind)}`" for kind in role.consumes]
    if role.writes_big_frames:
        produced.append(f"new objects in `{FRAMES_BUCKET}` (frames too big for a message)")
    publish = ", ".join([*produced, f"`{heartbeat_subject(line, identity)}`", *dead])
    reads = ", ".join(f"`{durable_name(identity, kind)}` on {stream_name(kind)}" for kind in role.consumes)
    if role.reads_registry:
        reads += ", the model registry"
    if role.reads_recipes:
        reads += ", the recipe store"
    if role.watches_heartbeats:
        reads += f", `lg.heartbeat.{line}.*` (subscribed)"
    if role.watches_captures:
        reads += f", `{durable_name(identity, 'frame')}` on {stream_name('frame')} (headers only)"
    if role.reads_big_frames:
        reads += f", the big frames' images (`{FRAMES_BUCKET}`)"
    if role.takes_selftest_commands:
        reads += f", `{_selftest_commands(line)}` (subscribed: self-test commands)"
    if identity in SIDE_SUBSCRIPTIONS:
        side = SIDE_SUBSCRIPTIONS[identity]
        kinds = ", ".join(f"`lg.{kind}.{line}.*`" for kind in side.kinds)
        reads += f", {kinds} (subscribed: {side.purpose})"
    return publish, reads


def markdown_table(line: str) -> str:
    """The permissions table, as docs/security.md shows it."""
    rows = ["| identity | publishes | reads (durable consumer on stream) |", "| --- | --- | --- |"]
    for identity in IDENTITIES:
        publish, reads = _summary(identity, line)
        rows.append(f"| {identity} | {publish} | {reads} |")
    return "\n".join(rows) + "\n"
