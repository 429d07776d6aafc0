from lineguard.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Code(_message.Message):
    __slots__ = ("symbology", "text", "outline", "box", "error", "gs1", "step", "quality", "quality_grades", "grade")
    class Gs1Entry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class QualityEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class QualityGradesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SYMBOLOGY_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    OUTLINE_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    GS1_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    QUALITY_GRADES_FIELD_NUMBER: _ClassVar[int]
    GRADE_FIELD_NUMBER: _ClassVar[int]
    symbology: str
    text: str
    outline: _common_pb2.Polygon
    box: _common_pb2.Box
    error: str
    gs1: _containers.ScalarMap[str, str]
    step: str
    quality: _containers.ScalarMap[str, float]
    quality_grades: _containers.ScalarMap[str, str]
    grade: str
    def __init__(self, symbology: _Optional[str] = ..., text: _Optional[str] = ..., outline: _Optional[_Union[_common_pb2.Polygon, _Mapping]] = ..., box: _Optional[_Union[_common_pb2.Box, _Mapping]] = ..., error: _Optional[str] = ..., gs1: _Optional[_Mapping[str, str]] = ..., step: _Optional[str] = ..., quality: _Optional[_Mapping[str, float]] = ..., quality_grades: _Optional[_Mapping[str, str]] = ..., grade: _Optional[str] = ...) -> None: ...

class FieldRead(_message.Message):
    __slots__ = ("name", "value", "read", "reason", "detail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    read: str
    reason: str
    detail: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ..., read: _Optional[str] = ..., reason: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class TextLine(_message.Message):
    __slots__ = ("text", "confidence", "box", "char_confidences")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    CHAR_CONFIDENCES_FIELD_NUMBER: _ClassVar[int]
    text: str
    confidence: float
    box: _common_pb2.Box
    char_confidences: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, text: _Optional[str] = ..., confidence: _Optional[float] = ..., box: _Optional[_Union[_common_pb2.Box, _Mapping]] = ..., char_confidences: _Optional[_Iterable[float]] = ...) -> None: ...

class OcrResult(_message.Message):
    __slots__ = ("part", "codes", "lines", "timings", "completed_unix_ns", "fields", "refused")
    PART_FIELD_NUMBER: _ClassVar[int]
    CODES_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    part: _common_pb2.Part
    codes: _containers.RepeatedCompositeFieldContainer[Code]
    lines: _containers.RepeatedCompositeFieldContainer[TextLine]
    timings: _containers.RepeatedCompositeFieldContainer[_common_pb2.StageTiming]
    completed_unix_ns: int
    fields: _containers.RepeatedCompositeFieldContainer[FieldRead]
    refused: str
    def __init__(self, part: _Optional[_Union[_common_pb2.Part, _Mapping]] = ..., codes: _Optional[_Iterable[_Union[Code, _Mapping]]] = ..., lines: _Optional[_Iterable[_Union[TextLine, _Mapping]]] = ..., timings: _Optional[_Iterable[_Union[_common_pb2.StageTiming, _Mapping]]] = ..., completed_unix_ns: _Optional[int] = ..., fields: _Optional[_Iterable[_Union[FieldRead, _Mapping]]] = ..., refused: _Optional[str] = ...) -> None: ...
