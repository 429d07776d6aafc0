"""Detecting defects in images: crop, letterbox, run the model (one image or a batch), map
boxes and masks back.

The library half of inference, shared by the inference service and the model tools
(`lineguard model predict / eval`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from lineguard.contracts import now_ns
from lineguard.imaging import ROI, ImageError
from lineguard.vision.detections import Detections
from lineguard.vision.errors import ModelOutputError, UnpairedInput
from lineguard.vision.model import Detector
from lineguard.vision.paired import paired_tensor, register
from lineguard.vision.postprocess import postprocess
from lineguard.vision.preprocess import Letterbox, preprocess


@dataclass(frozen=True)
class Timed:
    """Detections in frame pixels and the nanoseconds each stage began and ended at."""

    detections: Detections
    marks: dict[str, tuple[int, int]]


@dataclass(frozen=True)
class Prepared:
    """One image ready for the model: its (1, 3, S, S) tensor and how to map results back."""

    tensor: np.ndarray
    placement: Letterbox
    offset: tuple[int, int]
    marks: tuple[int, int]  # when preprocessing began and ended


def prepare(
    detector: Detector,
    image: np.ndarray,
    roi: ROI | None = None,
    reference: np.ndarray | None = None,
    *,
    align_px: int = 0,
) -> Prepared:
    """Crop to `roi` (ImageError when it is not a region of the image) and letterbox for the model.

    A paired model (card input mode "paired") needs the part's `reference`, registered to `image`: the
    two are cropped alike and composed (lineguard.vision.paired); ImageError when it is missing or
    does not match. With align_px the reference is first shifted onto the whole image (vision.paired.register),
    ImageError when the part sits further off. Other models ignore a reference."""
    t0 = now_ns()
    region = image if roi is None else crop(image, roi)
    size, scaleup = detector.card.input_size, detector.card.scaleup
    if detector.card.input_mode == "paired":
        if reference is None:
            raise ImageError(
                f"model {detector.card.model_id} {detector.card.version} compares each image with "
                "the part's reference image, and none was given"
            )
        try:
            if align_px:
                reference = register(image, reference, align_px)
            tensor, placement = paired_tensor(
                region, reference if roi is None else crop(reference, roi), size, scaleup=scaleup
            )
        except ImageError as exc:
            raise ImageError(f"reference image: {exc}") from None
        except ValueError as exc:
            raise ImageError(str(exc)) from None
    else:
        tensor, placement = preprocess(region, size, scaleup=scaleup)
    return Prepared(tensor, placement, (roi.x, roi.y) if roi else (0, 0), (t0, now_ns()))


def detect_batch(
    detector: Detector, images: Sequence[Prepared], *, conf_threshold: float, iou_threshold: float
) -> list[Timed | ModelOutputError]:
    """Run prepared images as one batch (in pieces where the model takes fewer); per image its Timed, or the
    ModelOutputError that says its output cannot be judged (the other images of the batch still are)."""
    if not images:
        return []
    t1 = now_ns()
    tensors = [p.tensor for p in images]
    # One image, the line's usual batch, runs as prepared: copying its input (5.4 MB at 672 px) cost 1.2 ms a frame.
    outputs = detector.run_batch(tensors[0] if len(tensors) == 1 else np.concatenate(tensors))
    t2 = now_ns()
    segment = detector.card.task == "segment"
    timed: list[Timed | ModelOutputError] = []
    for i, item in enumerate(images):
        started = now_ns()
        raw, protos = outputs[0][i : i + 1], outputs[1][i : i + 1] if segment else None
        broken = sum(int(a.size - np.count_nonzero(np.isfinite(a))) for a in (raw, protos) if a is not None)
        if broken:
            timed.append(
                ModelOutputError(
                    f"model {detector.card.model_id} {detector.card.version} gave {broken} values that are not numbers "
                    "(NaN / inf) for this image: it cannot be judged"
                )
            )
            continue
        found = postprocess(
            raw,
            len(detector.card.classes),
            item.placement,
            conf_threshold=conf_threshold,
            iou_threshold=iou_threshold,
            offset=item.offset,
            protos=protos,
        )
        timed.append(Timed(found, {"preprocess": item.marks, "infer": (t1, t2), "postprocess": (started, now_ns())}))
    return timed


def detect(
    detector: Detector,
    image: np.ndarray,
    *,
    conf_threshold: float,
    iou_threshold: float,
    roi: ROI | None = None,
    reference: np.ndarray | None = None,
    align_px: int = 0,
) -> Timed:
    """Defects in a BGR image; with `roi`, only inside it (boxes still in the whole image's pixels).
    ImageError (ModelOutputError among them) says why an image cannot be judged."""
    (found,) = detect_batch(
        detector,
        [prepare(detector, image, roi, reference, align_px=align_px)],
        conf_threshold=conf_threshold,
        iou_threshold=iou_threshold,
    )
    if isinstance(found, ModelOutputError):
        raise found
    return found


def stored_input(detector: Detector, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """An image as a dataset stores it, as detect() takes it: a paired model's dataset holds paired
    inputs (`lineguard data import-deeppcb --paired`), split here into the image and its reference.
    UnpairedInput for an image that is not one: its third channel is not the difference of the first two."""
    if detector.card.input_mode != "paired":
        return pixels, None
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        found = f"this one has shape {pixels.shape}"
    elif not np.array_equal(pixels[:, :, 2], cv2.absdiff(pixels[:, :, 0], pixels[:, :, 1])):
        found = "this one's third channel is not the difference of the first two: a plain image"
    else:
        return pixels[:, :, 0], pixels[:, :, 1]
    raise UnpairedInput(
        f"model {detector.card.model_id} {detector.card.version} is a paired model: it compares each image with "
        "its defect-free reference, and this image does not carry one (a paired input has 3 channels, the image, "
        f"its reference and their difference, as `lineguard data import-deeppcb --paired` writes it; {found})"
    )


def crop(image: np.ndarray, roi: ROI) -> np.ndarray:
    if roi.x < 0 or roi.y < 0 or roi.width <= 0 or roi.height <= 0:
        raise ImageError(
            f"region {roi.x},{roi.y} {roi.width}x{roi.height} is not a region of the image "
            "(needs x, y >= 0 and a positive size)"
        )
    return roi.crop(image)
