from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HealthStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_STATUS_UNSPECIFIED: _ClassVar[HealthStatus]
    HEALTH_STATUS_OK: _ClassVar[HealthStatus]
    HEALTH_STATUS_DEGRADED: _ClassVar[HealthStatus]
    HEALTH_STATUS_STOPPING: _ClassVar[HealthStatus]
HEALTH_STATUS_UNSPECIFIED: HealthStatus
HEALTH_STATUS_OK: HealthStatus
HEALTH_STATUS_DEGRADED: HealthStatus
HEALTH_STATUS_STOPPING: HealthStatus

class Heartbeat(_message.Message):
    __slots__ = ("service", "instance", "line", "sequence", "sent_unix_ns", "status", "version", "detail")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SENT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    service: str
    instance: str
    line: str
    sequence: int
    sent_unix_ns: int
    status: HealthStatus
    version: str
    detail: str
    def __init__(self, service: _Optional[str] = ..., instance: _Optional[str] = ..., line: _Optional[str] = ..., sequence: _Optional[int] = ..., sent_unix_ns: _Optional[int] = ..., status: _Optional[_Union[HealthStatus, str]] = ..., version: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...
