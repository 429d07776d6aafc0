from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Part(_message.Message):
    __slots__ = ("inspection_id", "line", "station", "recipe_id", "sequence", "triggered_unix_ns", "part_id", "lot", "recipe_version", "recipe_sha256", "simulated", "golden_case", "deadline_ms")
    INSPECTION_ID_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    STATION_FIELD_NUMBER: _ClassVar[int]
    RECIPE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TRIGGERED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    PART_ID_FIELD_NUMBER: _ClassVar[int]
    LOT_FIELD_NUMBER: _ClassVar[int]
    RECIPE_VERSION_FIELD_NUMBER: _ClassVar[int]
    RECIPE_SHA256_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    GOLDEN_CASE_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    inspection_id: str
    line: str
    station: str
    recipe_id: str
    sequence: int
    triggered_unix_ns: int
    part_id: str
    lot: str
    recipe_version: str
    recipe_sha256: str
    simulated: bool
    golden_case: str
    deadline_ms: int
    def __init__(self, inspection_id: _Optional[str] = ..., line: _Optional[str] = ..., station: _Optional[str] = ..., recipe_id: _Optional[str] = ..., sequence: _Optional[int] = ..., triggered_unix_ns: _Optional[int] = ..., part_id: _Optional[str] = ..., lot: _Optional[str] = ..., recipe_version: _Optional[str] = ..., recipe_sha256: _Optional[str] = ..., simulated: _Optional[bool] = ..., golden_case: _Optional[str] = ..., deadline_ms: _Optional[int] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("x1", "y1", "x2", "y2")
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    X2_FIELD_NUMBER: _ClassVar[int]
    Y2_FIELD_NUMBER: _ClassVar[int]
    x1: float
    y1: float
    x2: float
    y2: float
    def __init__(self, x1: _Optional[float] = ..., y1: _Optional[float] = ..., x2: _Optional[float] = ..., y2: _Optional[float] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class Polygon(_message.Message):
    __slots__ = ("points",)
    POINTS_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[Point]
    def __init__(self, points: _Optional[_Iterable[_Union[Point, _Mapping]]] = ...) -> None: ...

class StageTiming(_message.Message):
    __slots__ = ("stage", "ms")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    MS_FIELD_NUMBER: _ClassVar[int]
    stage: str
    ms: float
    def __init__(self, stage: _Optional[str] = ..., ms: _Optional[float] = ...) -> None: ...

class ImageQuality(_message.Message):
    __slots__ = ("brightness", "contrast", "sharpness", "saturated")
    BRIGHTNESS_FIELD_NUMBER: _ClassVar[int]
    CONTRAST_FIELD_NUMBER: _ClassVar[int]
    SHARPNESS_FIELD_NUMBER: _ClassVar[int]
    SATURATED_FIELD_NUMBER: _ClassVar[int]
    brightness: float
    contrast: float
    sharpness: float
    saturated: float
    def __init__(self, brightness: _Optional[float] = ..., contrast: _Optional[float] = ..., sharpness: _Optional[float] = ..., saturated: _Optional[float] = ...) -> None: ...
