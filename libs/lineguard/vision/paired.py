"""Reference comparison: a model that sees the part beside its defect-free reference.

Printed-circuit inspection compares each board with a golden board registered to it; DeepPCB
publishes every image with such a template for that reason. A "paired" model gets one 3-channel
input built from the two greyscale images, in OpenCV's BGR order as written to a PNG:

    channel 0 (B): the inspected image
    channel 1 (G): the reference image
    channel 2 (R): |image - reference|, where a defect stands out

The dataset importer writes training images this way and the inference service builds the same
input from a frame and its reference, so training and run time see the same pixels. A reference
must be registered to the image; a recipe can have it shifted onto each part first (register)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from lineguard.vision.preprocess import Letterbox, planes_to_tensor

INPUT_MODES: tuple[str, ...] = ("image", "paired")
PAIRED_CHANNELS: tuple[str, ...] = ("image", "reference", "difference")
REPAIR_MARGIN_PX = 2  # around a defect box: boxes are drawn tight, a defect's edge pixels may lie on them


def greyscale(image: np.ndarray) -> np.ndarray:
    """(H, W) uint8 from a greyscale or BGR image."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    raise ValueError(f"expected a greyscale or BGR image, got shape {image.shape}")


def _registered(image: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image, reference = greyscale(image), greyscale(reference)
    if image.shape != reference.shape:
        raise ValueError(
            f"the reference image is {reference.shape[1]}x{reference.shape[0]} but the image is "
            f"{image.shape[1]}x{image.shape[0]}: a reference must be registered to the image, same size"
        )
    return image, reference


def compose(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The paired model's (H, W, 3) uint8 input for an image and its registered reference."""
    image, reference = _registered(image, reference)
    return cv2.merge((image, reference, cv2.absdiff(image, reference)))  # 30x faster than np.dstack


def register(image: np.ndarray, reference: np.ndarray, max_shift_px: int) -> np.ndarray:
    """`reference` (greyscale) shifted by whole pixels onto `image`, the shift found by phase correlation: for a
    camera whose parts do not sit exactly where the golden image's did. ValueError naming the shift when the
    part sits further than max_shift_px off: it cannot be compared (about 12 ms at 640 px on a 2-core CPU)."""
    image, reference = _registered(image, reference)
    (dx, dy), _ = cv2.phaseCorrelate(reference.astype(np.float32), image.astype(np.float32))
    shift_x, shift_y = round(dx), round(dy)
    if max(abs(shift_x), abs(shift_y)) > max_shift_px:
        raise ValueError(
            f"the part sits {shift_x:+d}, {shift_y:+d} px from its reference, more than the "
            f"{max_shift_px} px the recipe aligns (align_reference_px): it cannot be compared"
        )
    if (shift_x, shift_y) == (0, 0):
        return reference
    height, width = reference.shape
    move = np.array([[1, 0, shift_x], [0, 1, shift_y]], np.float32)
    return cv2.warpAffine(reference, move, (width, height), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)


def paired_tensor(
    image: np.ndarray, reference: np.ndarray, size: int, *, scaleup: bool = True
) -> tuple[np.ndarray, Letterbox]:
    """The model input for an image and its registered reference: preprocess(compose(image, reference)) in one
    pass, from the planes (the model sees compose's BGR channels reversed: difference, reference, image)."""
    image, reference = _registered(image, reference)
    return planes_to_tensor((cv2.absdiff(image, reference), reference, image), size, scaleup=scaleup)


def recompose(paired: np.ndarray) -> np.ndarray:
    """A paired input whose image channel was changed (a lighting augmentation): the difference again."""
    paired[:, :, 2] = cv2.absdiff(paired[:, :, 0], paired[:, :, 1])
    return paired


def repaired_board(
    board: np.ndarray, reference: np.ndarray, boxes: Sequence[Sequence[int]], margin: int = REPAIR_MARGIN_PX
) -> np.ndarray:
    """`board` with every defect box (x1, y1, x2, y2, and a margin) copied from its reference: a defect-free
    board that is still its own capture, so it differs from the reference by the registration and
    binarisation noise a good part on the line shows (0.1 - 7 % of DeepPCB's pixels outside the boxes).
    Compared with its reference it is an honest good part; the reference against itself is a trivial one."""
    repaired = board.copy()
    if reference.ndim != board.ndim:
        reference = greyscale(reference) if board.ndim == 2 else cv2.cvtColor(greyscale(reference), cv2.COLOR_GRAY2BGR)
    height, width = board.shape[:2]
    for x1, y1, x2, y2 in boxes:
        top, bottom = max(0, y1 - margin), min(height, y2 + margin)
        left, right = max(0, x1 - margin), min(width, x2 + margin)
        repaired[top:bottom, left:right] = reference[top:bottom, left:right]
    return repaired
