"""A frame in, an InferenceResult out: decode, crop to the recipe's inspect_roi, letterbox,
run the model, decode and map the boxes back to the frame's pixels."""

from __future__ import annotations

from lineguard.config import LineConfig, ModelSettings
from lineguard.contracts import copy_part, now_ns, timing
from lineguard.imaging import ROI, ImageError, decode_image
from lineguard.vision.detect import detect
from lineguard.vision.model import OnnxDetector, load_model
from lineguard.vision.postprocess import Detection
from lineguard.v1.common_pb2 import Box
from lineguard.v1.frame_pb2 import Frame
from lineguard.v1.inference_pb2 import Detection as DetectionMessage
from lineguard.v1.inference_pb2 import InferenceResult


class InferenceInputError(ValueError):
    """This frame can never be inspected; the message says why."""


def infer_frame(frame: Frame, config: LineConfig, detector: OnnxDetector) -> InferenceResult:
    """The defects on `frame`'s part; raises InferenceInputError for a frame that cannot be inspected."""
    started = now_ns()
    part = frame.part
    try:
        recipe = config.recipe(part.recipe_id)
    except KeyError as exc:
        raise InferenceInputError(f"frame of part {part.inspection_id}: {exc.args[0]}") from None
    if frame.WhichOneof("payload") == "object_key":
        raise InferenceInputError(f"frame carries object_key {frame.object_key!r}: frames in the object store "
                                  "are not supported yet")
    try:
        image = decode_image(frame.data, expected_encoding=frame.encoding or None)
    except ImageError as exc:
        raise InferenceInputError(str(exc)) from None
    try:
        found = detect(detector, image, conf_threshold=config.model.conf_threshold,
                       iou_threshold=config.model.iou_threshold, roi=ROI.from_list(recipe.inspect_roi))
    except ImageError as exc:
        raise InferenceInputError(f"recipe {part.recipe_id!r} inspect_roi: {exc}") from None

    height, width = image.shape[:2]
    result = InferenceResult(
        part=copy_part(part),
        model_id=detector.card.model_id,
        model_version=detector.card.version,
        detections=[detection_message(d, frame.px_per_mm) for d in found.detections],
        image_width=width,
        image_height=height,
    )
    # Decoding counts as preprocessing: it is the cost of getting pixels ready for the model.
    result.timings.append(timing("preprocess", started, found.marks["preprocess"][1]))
    for stage in ("infer", "postprocess"):
        result.timings.append(timing(stage, *found.marks[stage]))
    result.completed_unix_ns = now_ns()
    return result


def detection_message(det: Detection, px_per_mm: float) -> DetectionMessage:
    area = det.area_px
    return DetectionMessage(
        class_name=det.class_name,
        class_id=det.class_id,
        score=det.score,
        box=Box(x1=det.x1, y1=det.y1, x2=det.x2, y2=det.y2),
        area_px=area,
        area_mm2=area / px_per_mm**2 if px_per_mm > 0 else 0.0,
    )


def load_configured_model(settings: ModelSettings) -> OnnxDetector:
    """The model ModelSettings names (default: the packaged one)."""
    return load_model(settings.path, intra_op_threads=settings.intra_op_threads, model_id=settings.id,
                      version=settings.version)
