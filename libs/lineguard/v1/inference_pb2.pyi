from lineguard.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Detection(_message.Message):
    __slots__ = ("class_name", "class_id", "score", "box", "mask", "area_px", "area_mm2")
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    AREA_PX_FIELD_NUMBER: _ClassVar[int]
    AREA_MM2_FIELD_NUMBER: _ClassVar[int]
    class_name: str
    class_id: int
    score: float
    box: _common_pb2.Box
    mask: _common_pb2.Polygon
    area_px: float
    area_mm2: float
    def __init__(self, class_name: _Optional[str] = ..., class_id: _Optional[int] = ..., score: _Optional[float] = ..., box: _Optional[_Union[_common_pb2.Box, _Mapping]] = ..., mask: _Optional[_Union[_common_pb2.Polygon, _Mapping]] = ..., area_px: _Optional[float] = ..., area_mm2: _Optional[float] = ...) -> None: ...

class InferenceResult(_message.Message):
    __slots__ = ("part", "model_id", "model_version", "detections", "image_width", "image_height", "timings", "completed_unix_ns", "model_sha256", "image_quality", "refused")
    PART_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    IMAGE_QUALITY_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    part: _common_pb2.Part
    model_id: str
    model_version: str
    detections: _containers.RepeatedCompositeFieldContainer[Detection]
    image_width: int
    image_height: int
    timings: _containers.RepeatedCompositeFieldContainer[_common_pb2.StageTiming]
    completed_unix_ns: int
    model_sha256: str
    image_quality: _common_pb2.ImageQuality
    refused: str
    def __init__(self, part: _Optional[_Union[_common_pb2.Part, _Mapping]] = ..., model_id: _Optional[str] = ..., model_version: _Optional[str] = ..., detections: _Optional[_Iterable[_Union[Detection, _Mapping]]] = ..., image_width: _Optional[int] = ..., image_height: _Optional[int] = ..., timings: _Optional[_Iterable[_Union[_common_pb2.StageTiming, _Mapping]]] = ..., completed_unix_ns: _Optional[int] = ..., model_sha256: _Optional[str] = ..., image_quality: _Optional[_Union[_common_pb2.ImageQuality, _Mapping]] = ..., refused: _Optional[str] = ...) -> None: ...
