"""A frame in, an InferenceResult out: decode, crop to the recipe's inspect_roi, letterbox,
run the model, decode and map the boxes (and masks) back to the frame's pixels.

`prepare_frame` + `infer_prepared` are the two halves, so that several frames can run as
one batch (batching.py); `infer_frame` is both for one frame."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog

from lineguard.config import LineConfig, ModelSettings
from lineguard.contracts import copy_part, now_ns, timing
from lineguard.imaging import ROI, FrameError, ImageError, ImageLimits, decode_image, frame_limits, frame_pixels
from lineguard.v1.common_pb2 import Box, Point, Polygon
from lineguard.v1.frame_pb2 import Frame
from lineguard.v1.inference_pb2 import Detection as DetectionMessage
from lineguard.v1.inference_pb2 import InferenceResult
from lineguard.vision.detect import Prepared, detect_batch, prepare
from lineguard.vision.detections import Detections
from lineguard.vision.errors import ModelOutputError
from lineguard.vision.model import Detector, load_model
from lineguard.vision.signing import Trust

log = structlog.get_logger("lineguard.inference")

# References decoded and kept: a few products' golden images (a failed decode is not kept).
REFERENCES_CACHED = 16


@dataclass(frozen=True)
class PreparedFrame:
    frame: Frame
    image: Prepared
    width: int
    height: int
    started_ns: int
    detector: Detector  # the model it was prepared for (its input size and mode)


def prepare_frame(frame: Frame, config: LineConfig, detector: Detector) -> PreparedFrame:
    """Decode and letterbox `frame`; raises FrameError for a frame that cannot be inspected."""
    started = now_ns()
    part = frame.part
    paired = detector.card.input_mode == "paired"
    # A paired model compares intensities: both images decode straight to grey, as the importer reads them.
    recipe, image = frame_pixels(frame, config, grey=paired)
    reference = None
    if paired and frame.reference_data:
        try:
            reference = _reference(frame.reference_data, frame.reference_encoding or None, frame_limits(frame, config))
        except ImageError as exc:
            raise FrameError(f"reference image: {exc}") from None
    try:
        prepared = prepare(
            detector, image, ROI.from_list(recipe.inspect_roi), reference, align_px=recipe.align_reference_px
        )
    except ImageError as exc:
        raise FrameError(
            f"part {part.inspection_id} (recipe {part.recipe_id!r}, inspect_roi {recipe.inspect_roi}): {exc}"
        ) from None
    height, width = image.shape[:2]
    return PreparedFrame(frame, prepared, width, height, started, detector)


@functools.lru_cache(maxsize=REFERENCES_CACHED)
def _reference(data: bytes, encoding: str | None, limits: ImageLimits) -> np.ndarray:
    """A reference image, decoded once: a station compares every part of a product with the same golden image."""
    image = decode_image(data, expected_encoding=encoding, grey=True, limits=limits)
    image.flags.writeable = False  # shared by every frame that brings it
    return image


def infer_prepared(
    frames: Sequence[PreparedFrame], config: LineConfig, detector: Detector
) -> list[InferenceResult | FrameError]:
    """Run prepared frames as one batch; per frame, in order, its InferenceResult or the FrameError that says
    why the model's output for it cannot be judged."""
    found = detect_batch(
        detector,
        [f.image for f in frames],
        conf_threshold=config.model.conf_threshold,
        iou_threshold=config.model.iou_threshold,
    )
    results: list[InferenceResult | FrameError] = []
    for prepared, timed in zip(frames, found, strict=True):
        frame = prepared.frame
        if isinstance(timed, ModelOutputError):
            results.append(FrameError(f"part {frame.part.inspection_id}: {timed}"))
            continue
        result = InferenceResult(
            part=copy_part(frame.part),
            model_id=detector.card.model_id,
            model_version=detector.card.version,
            model_sha256=detector.card.onnx_sha256 or "",
            detections=to_proto(timed.detections, detector.card.classes, frame.px_per_mm),
            image_width=prepared.width,
            image_height=prepared.height,
        )
        if frame.HasField("quality"):  # carried on to the decision, for the record and the drift watch
            result.image_quality.CopyFrom(frame.quality)
        # Decoding counts as preprocessing: it is the cost of getting pixels ready for the model.
        result.timings.append(timing("preprocess", prepared.started_ns, timed.marks["preprocess"][1]))
        for stage in ("infer", "postprocess"):
            result.timings.append(timing(stage, *timed.marks[stage]))
        result.completed_unix_ns = now_ns()
        results.append(result)
    return results


def infer_frame(frame: Frame, config: LineConfig, detector: Detector) -> InferenceResult:
    """The defects on `frame`'s part; raises FrameError for a frame that cannot be inspected."""
    (outcome,) = infer_prepared([prepare_frame(frame, config, detector)], config, detector)
    if isinstance(outcome, FrameError):
        raise outcome
    return outcome


def to_proto(detections: Detections, classes: Sequence[str], px_per_mm: float) -> list[DetectionMessage]:
    """The messages of one frame's detections: class ids named from the model's `classes`, areas in px² and,
    through the station's calibration, mm² (0 when uncalibrated)."""
    areas = detections.area_px
    messages = []
    for i in range(len(detections)):
        class_id = int(detections.class_id[i])
        x1, y1, x2, y2 = (float(v) for v in detections.xyxy[i])
        outline = () if detections.polygon is None else detections.polygon[i]
        area = float(areas[i])
        messages.append(
            DetectionMessage(
                class_name=classes[class_id],
                class_id=class_id,
                score=float(detections.confidence[i]),
                box=Box(x1=x1, y1=y1, x2=x2, y2=y2),
                mask=Polygon(points=[Point(x=float(x), y=float(y)) for x, y in outline]) if len(outline) else None,
                area_px=area,
                area_mm2=area / px_per_mm**2 if px_per_mm > 0 else 0.0,
            )
        )
    return messages


def load_configured_model(settings: ModelSettings) -> Detector:
    """The model ModelSettings names (default: the packaged one), on the backend and device it names, if its card
    is signed by a key in the trusted set (lineguard.vision.signing)."""
    if settings.allow_unsigned:
        log.warning("model_unsigned_allowed", path=settings.path, why="model.allow_unsigned is true")
    trust = Trust.from_dir(
        Path(settings.trusted_keys_dir) if settings.trusted_keys_dir else None, allow_unsigned=settings.allow_unsigned
    )
    return load_model(
        settings.path,
        backend=settings.backend,
        device=settings.device,
        intra_op_threads=settings.intra_op_threads,
        model_id=settings.id,
        version=settings.version,
        trust=trust,
    )
