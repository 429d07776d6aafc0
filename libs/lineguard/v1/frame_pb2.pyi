from lineguard.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Frame(_message.Message):
    __slots__ = ("part", "camera_id", "captured_unix_ns", "width", "height", "channels", "encoding", "data", "object_key", "source_uri", "px_per_mm", "timings", "reference_data", "reference_encoding", "quality")
    PART_FIELD_NUMBER: _ClassVar[int]
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    OBJECT_KEY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_URI_FIELD_NUMBER: _ClassVar[int]
    PX_PER_MM_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_DATA_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_ENCODING_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    part: _common_pb2.Part
    camera_id: str
    captured_unix_ns: int
    width: int
    height: int
    channels: int
    encoding: str
    data: bytes
    object_key: str
    source_uri: str
    px_per_mm: float
    timings: _containers.RepeatedCompositeFieldContainer[_common_pb2.StageTiming]
    reference_data: bytes
    reference_encoding: str
    quality: _common_pb2.ImageQuality
    def __init__(self, part: _Optional[_Union[_common_pb2.Part, _Mapping]] = ..., camera_id: _Optional[str] = ..., captured_unix_ns: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., channels: _Optional[int] = ..., encoding: _Optional[str] = ..., data: _Optional[bytes] = ..., object_key: _Optional[str] = ..., source_uri: _Optional[str] = ..., px_per_mm: _Optional[float] = ..., timings: _Optional[_Iterable[_Union[_common_pb2.StageTiming, _Mapping]]] = ..., reference_data: _Optional[bytes] = ..., reference_encoding: _Optional[str] = ..., quality: _Optional[_Union[_common_pb2.ImageQuality, _Mapping]] = ...) -> None: ...
