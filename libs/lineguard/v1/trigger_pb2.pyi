from lineguard.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Trigger(_message.Message):
    __slots__ = ("part", "part_id", "source")
    PART_FIELD_NUMBER: _ClassVar[int]
    PART_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    part: _common_pb2.Part
    part_id: str
    source: str
    def __init__(self, part: _Optional[_Union[_common_pb2.Part, _Mapping]] = ..., part_id: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...
