"""The simulated camera's serial label: a white strip below the board holding a DataMatrix.

A real line reads a serial printed or lasered on the part; the simulator prints
one so that the OCR service and the recipe's code rules have something to read."""

from __future__ import annotations

import cv2
import numpy as np
import zxingcpp

STRIP_HEIGHT = 160
_MARGIN = 24
_MAX_MODULE_PX = 7


def serial_datamatrix(serial: str, max_side: int) -> np.ndarray:
    """`serial` as a black-on-white DataMatrix (grayscale), as large as fits in `max_side` pixels."""
    barcode = zxingcpp.create_barcode(serial, zxingcpp.BarcodeFormat.DataMatrix)
    modules = np.asarray(barcode.to_image(scale=1, add_quiet_zones=False))
    scale = min(_MAX_MODULE_PX, max_side // max(modules.shape))
    if scale < 1:
        raise ValueError(f"a DataMatrix of {serial!r} needs {max(modules.shape)} px, only {max_side} px available")
    return np.kron(modules, np.ones((scale, scale), np.uint8))


def stamp_serial(board: np.ndarray, serial: str) -> np.ndarray:
    """The board with a STRIP_HEIGHT white strip appended below it: the serial as a DataMatrix
    at the left and as printed text beside it (for the text reader)."""
    width = board.shape[1]
    strip = np.full((STRIP_HEIGHT, width, *board.shape[2:]), 255, np.uint8)
    code = serial_datamatrix(serial, min(STRIP_HEIGHT, width) - 2 * _MARGIN)
    side = code.shape[0]
    top = (STRIP_HEIGHT - side) // 2
    strip[top : top + side, _MARGIN : _MARGIN + side] = code if board.ndim == 2 else code[..., None]
    baseline = STRIP_HEIGHT // 2 + 14
    cv2.putText(strip, serial, (_MARGIN + side + 32, baseline), cv2.FONT_HERSHEY_SIMPLEX, 1.2, 0, 2, cv2.LINE_AA)
    return np.vstack([board, strip])
