"""Frames too big for one message: the image goes into the JetStream object store (bucket `lg-frames`) and the frame
message carries its key (Frame.object_key) instead of the bytes; the services that read frames fetch it back.

Capture stores an image whose frame would pass `nats.inline_image_max_bytes` (`offload`), in chunks of that size (a
36 MB frame is 9 publishes of 4 MB, not 290 of nats-py's 128 KB), under `<line>/<station>/<inspection id>/<captured
ns>`: a name is never written twice, so no one needs to purge. Inference, OCR and the results archive consume frames
through `fetching_images`, which puts the bytes back into Frame.data before their handler runs, so everything after
sees an ordinary frame. An image no longer in the bucket is dead-lettered with the reason; the bus away is retried.

The bucket's stream is provisioned with the line's (lineguard.bus.streams): it keeps images as long as the frame
stream keeps frames (nats.stream_max_age_s, nats.stream_max_bytes) and, like frames, drops the oldest when full (an
image is worth nothing past its part's deadline) rather than refusing the next part's."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nats.js import JetStreamContext
from nats.js.api import ObjectMeta, ObjectMetaOptions
from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

from lineguard.bus.errors import BadMessage, Retry
from lineguard.v1.frame_pb2 import Frame

if TYPE_CHECKING:  # the worker imports the client, which imports the streams, which name this bucket
    from lineguard.bus.worker import Delivery, Handler

FRAMES_BUCKET = "lg-frames"
FRAMES_STREAM = f"OBJ_{FRAMES_BUCKET}"
FRAMES_SUBJECTS = (f"$O.{FRAMES_BUCKET}.C.>", f"$O.{FRAMES_BUCKET}.M.>")  # chunks, and each object's meta


class FramesBucketMissing(RuntimeError):
    """The bucket was not provisioned; says how to make it."""


async def frames_bucket(js: JetStreamContext) -> ObjectStore:
    try:
        return await js.object_store(FRAMES_BUCKET)
    except (BucketNotFoundError, NotFoundError):
        raise FramesBucketMissing(
            f"the frames bucket {FRAMES_BUCKET} (stream {FRAMES_STREAM}) does not exist: it is one of the line's "
            "streams (`lineguard nats provision --config LINE.yaml` on a secured server)"
        ) from None


def inline_bytes(frame: Frame) -> int:
    return len(frame.data) + len(frame.reference_data)


def object_name(frame: Frame) -> str:
    part = frame.part
    return f"{part.line}/{part.station}/{part.inspection_id}/{frame.captured_unix_ns}"


async def offload(bucket: ObjectStore, frame: Frame, inline_limit: int) -> Frame:
    """`frame` with its image moved into the bucket when the frame would be over `inline_limit` bytes; as it was
    otherwise. ValueError when even without its image it is over (the reference alone)."""
    if inline_bytes(frame) <= inline_limit:
        return frame
    if len(frame.reference_data) > inline_limit:
        raise ValueError(
            f"frame from {frame.camera_id}: its reference image alone is {len(frame.reference_data)} bytes, over "
            f"nats.inline_image_max_bytes={inline_limit} (only the image goes to the object store)"
        )
    name = object_name(frame)
    meta = ObjectMeta(name=name, options=ObjectMetaOptions(max_chunk_size=inline_limit))
    await bucket.put(name, frame.data, meta=meta)
    frame.object_key = name  # the payload's oneof: the inline bytes are cleared
    return frame


async def fetch_image(bucket: ObjectStore, frame: Frame) -> None:
    """Put the image of a frame that carries an object_key back into Frame.data (nothing to do for an inline one)."""
    if frame.WhichOneof("payload") != "object_key":
        return
    key = frame.object_key
    try:
        found = await bucket.get(key)
    except ObjectNotFoundError:
        raise BadMessage(
            f"frame of inspection {frame.part.inspection_id}: its image {key!r} is not in the object store "
            f"{FRAMES_BUCKET} (older than the bucket keeps, or never stored)"
        ) from None
    if found.data is None:
        raise BadMessage(f"frame of inspection {frame.part.inspection_id}: its image {key!r} is empty")
    frame.data = found.data


def fetching_images(js: JetStreamContext, handler: Handler[Frame]) -> Handler[Frame]:
    """`handler` for frames, each given its image from the bucket first when it carries only the key."""
    bucket: ObjectStore | None = None

    async def handle(delivery: Delivery[Frame]) -> None:
        nonlocal bucket
        if delivery.message.WhichOneof("payload") == "object_key":
            try:
                bucket = bucket or await frames_bucket(js)
                await fetch_image(bucket, delivery.message)
            except FramesBucketMissing as exc:
                raise Retry(str(exc)) from None
            except (TimeoutError, OSError) as exc:  # the bus, not the frame
                raise Retry(f"object store {FRAMES_BUCKET}: {exc}") from None
        await handler(delivery)

    return handle
