from lineguard.v1 import common_pb2 as _common_pb2
from lineguard.v1 import decision_pb2 as _decision_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PlcAck(_message.Message):
    __slots__ = ("part", "verdict", "reason_codes", "protocol", "delivered", "delivered_unix_ns", "gateway_timeout")
    PART_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    REASON_CODES_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    part: _common_pb2.Part
    verdict: _decision_pb2.Verdict
    reason_codes: _containers.RepeatedScalarFieldContainer[str]
    protocol: str
    delivered: bool
    delivered_unix_ns: int
    gateway_timeout: bool
    def __init__(self, part: _Optional[_Union[_common_pb2.Part, _Mapping]] = ..., verdict: _Optional[_Union[_decision_pb2.Verdict, str]] = ..., reason_codes: _Optional[_Iterable[str]] = ..., protocol: _Optional[str] = ..., delivered: _Optional[bool] = ..., delivered_unix_ns: _Optional[int] = ..., gateway_timeout: _Optional[bool] = ...) -> None: ...
