"""A station's golden parts (its `selftest.cases`): the stored images capture hands over for a self-test part
(Part.golden_case) instead of grabbing the camera, so the rest of the line judges them as it judges any part."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from lineguard.config import LineConfig
from lineguard.contracts import now_ns
from lineguard.services.capture.sources import CameraError, CapturedImage
from lineguard.services.capture.sources.files import Reference, file_image, read_reference
from lineguard.v1.common_pb2 import Part


class GoldenImages:
    """The golden images of every station with a self-test, read once, on first use."""

    def __init__(self, config: LineConfig):
        self.config = config
        self._read: dict[tuple[str, str], CapturedImage] = {}

    def grab(self, part: Part) -> CapturedImage:
        """The image of the golden case `part` names; CameraError when its station has no such case."""
        key = (part.station, part.golden_case)
        image = self._read.get(key)
        if image is None:
            image = self._read[key] = self._load(part.station, part.golden_case)
        return replace(image, captured_unix_ns=now_ns())

    def _load(self, station_id: str, name: str) -> CapturedImage:
        label = f"golden:{station_id}"
        selftest = self.config.station(station_id).selftest
        case = next((c for c in selftest.cases if c.name == name), None) if selftest else None
        if case is None:
            known = ", ".join(c.name for c in selftest.cases) if selftest else "none: no selftest configured"
            raise CameraError(f"camera {label}: station {station_id} has no golden case {name!r} (known: {known})")
        path = Path(case.image)
        reference = read_reference(label, Path(case.reference)) if case.reference else Reference()
        image = file_image(label, path, f"golden:{station_id}/{name}", 0)
        return replace(image, reference=reference.data, reference_encoding=reference.encoding)
