"""A trigger in, a frame out: the station's camera grabs, the frame carries the image (inline here; the service moves
one too big for a message into the object store, lineguard.bus.bigframes)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lineguard.config import LineConfig
from lineguard.contracts import copy_part, now_ns, timing
from lineguard.imagequality import decode_gray, measure, measure_encoded
from lineguard.imaging import ROI
from lineguard.runtime.metrics import IMAGE_BRIGHTNESS, IMAGE_CONTRAST, IMAGE_SATURATED, IMAGE_SHARPNESS
from lineguard.services.capture.golden import GoldenImages
from lineguard.services.capture.sources import (
    CameraError,
    CameraSource,
    CapturedImage,
    TakesProductSettings,
    Watched,
    open_source,
)
from lineguard.v1.common_pb2 import ImageQuality
from lineguard.v1.frame_pb2 import Frame
from lineguard.v1.trigger_pb2 import Trigger


class CaptureError(ValueError):
    """This trigger can never get a frame; the message says why."""


@dataclass
class StationCameras:
    """The camera of every station on the line."""

    config: LineConfig
    sources: dict[str, CameraSource]
    golden: GoldenImages | None = None  # the stations' golden parts, for self-test parts
    products: dict[str, str] = field(default_factory=dict)  # station -> the recipe whose camera settings are set

    @classmethod
    def from_config(cls, config: LineConfig) -> StationCameras:
        return cls(config, {s.id: open_source(s.id, s.camera) for s in config.stations}, GoldenImages(config))

    def watched(self) -> bool:
        """Whether any station's camera can go away (a network camera): the others never have a problem to report."""
        return any(isinstance(source, Watched) for source in self.sources.values())

    def problems(self) -> dict[str, str]:
        """Each station whose camera cannot grab now, with why."""
        found = {}
        for station, source in self.sources.items():
            if isinstance(source, Watched) and (problem := source.problem()):
                found[station] = problem
        return found

    def close(self) -> None:
        for source in self.sources.values():
            if isinstance(source, Watched):
                source.close()

    def capture(self, trigger: Trigger) -> Frame:
        """Grab the image of `trigger`'s part; raises CaptureError when there can be none."""
        started = now_ns()
        part = trigger.part
        source = self.sources.get(part.station)
        if source is None:
            known = ", ".join(sorted(self.sources))
            raise CaptureError(
                f"trigger names station {part.station!r}, which is not configured on line "
                f"{self.config.line!r} (known: {known})"
            )
        try:
            if isinstance(source, TakesProductSettings) and not part.golden_case:
                self._set_product(part.station, source, part.recipe_id)
            # A self-test part is one of the station's golden images, not the camera's next one.
            image = self.golden.grab(part) if part.golden_case and self.golden else source.grab(part)
        except CameraError as exc:
            raise CaptureError(str(exc)) from None
        frame = Frame(
            part=copy_part(part),
            camera_id=source.camera_id,
            captured_unix_ns=image.captured_unix_ns,
            width=image.width,
            height=image.height,
            channels=image.channels,
            encoding=image.encoding,
            data=image.data,
            source_uri=image.source_uri,
            px_per_mm=self.config.station(part.station).camera.px_per_mm,
            reference_data=image.reference,
            reference_encoding=image.reference_encoding,
        )
        if (quality := self._quality(image, part.recipe_id)) is not None:
            frame.quality.CopyFrom(quality)
            if not part.simulated:  # a golden part's figures are the stored image's, not the line's lighting
                observe_quality(part.station, quality)
        frame.timings.append(timing("capture", started))
        return frame

    def _set_product(self, station: str, source: TakesProductSettings, recipe_id: str) -> None:
        """A part of another product than the last: its recipe's camera settings before its image is taken (the
        handshake stamps a recipe change on the parts triggered after it, so it falls between parts)."""
        recipe = self.config.recipes.get(recipe_id)
        if recipe is None or self.products.get(station) == recipe_id:
            return
        source.set_product(recipe.camera)  # CameraError: this part fails, the next of the recipe tries again
        self.products[station] = recipe_id

    def _quality(self, image: CapturedImage, recipe_id: str) -> ImageQuality | None:
        """The image's quality within the recipe's inspect_roi (what is inspected, not the label strip beside it);
        None when its pixels cannot be had (the frame goes on: inference says what is wrong with it)."""
        recipe = self.config.recipes.get(recipe_id)
        roi = ROI.from_list(recipe.inspect_roi) if recipe is not None else None
        try:
            if image.pixels is None and roi is None:
                return measure_encoded(image.data, image.encoding, image.width).to_proto()
            pixels = image.pixels if image.pixels is not None else decode_gray(image.data)
            if roi is not None:
                cropped = pixels[roi.y : roi.y + roi.height, roi.x : roi.x + roi.width]
                pixels = cropped if cropped.size else pixels
            return measure(pixels).to_proto()
        except ValueError:
            return None


def observe_quality(station: str, quality: ImageQuality) -> None:
    """One frame's figures into the station's histograms (lineguard_image_*)."""
    IMAGE_BRIGHTNESS.labels(station).observe(quality.brightness)
    IMAGE_CONTRAST.labels(station).observe(quality.contrast)
    IMAGE_SHARPNESS.labels(station).observe(quality.sharpness)
    IMAGE_SATURATED.labels(station).observe(quality.saturated)
