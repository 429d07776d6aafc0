"""The inference service's OVERLOAD result: what it publishes for a frame admission (lineguard.runtime.admission)
refuses, since the model cannot judge it by its part's deadline."""

from __future__ import annotations

from lineguard.contracts import copy_part, now_ns
from lineguard.runtime.admission import OVERLOAD
from lineguard.v1.common_pb2 import Part
from lineguard.v1.inference_pb2 import InferenceResult
from lineguard.vision.model import Detector


def overload_result(part: Part, detector: Detector) -> InferenceResult:
    """The inference result of a refused frame: no detections, `refused` OVERLOAD (the part fails with it)."""
    card = detector.card
    return InferenceResult(
        part=copy_part(part),
        model_id=card.model_id,
        model_version=card.version,
        model_sha256=card.onnx_sha256 or "",
        completed_unix_ns=now_ns(),
        refused=OVERLOAD,
    )
