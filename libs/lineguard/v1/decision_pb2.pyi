from lineguard.v1 import common_pb2 as _common_pb2
from lineguard.v1 import inference_pb2 as _inference_pb2
from lineguard.v1 import ocr_pb2 as _ocr_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    VERDICT_PASS: _ClassVar[Verdict]
    VERDICT_FAIL: _ClassVar[Verdict]
    VERDICT_REWORK: _ClassVar[Verdict]
    VERDICT_ERROR: _ClassVar[Verdict]
VERDICT_UNSPECIFIED: Verdict
VERDICT_PASS: Verdict
VERDICT_FAIL: Verdict
VERDICT_REWORK: Verdict
VERDICT_ERROR: Verdict

class Finding(_message.Message):
    __slots__ = ("verdict", "reason", "rule", "text", "class_name", "zone", "detections", "score", "threshold", "at", "area", "area_unit", "count")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    AREA_FIELD_NUMBER: _ClassVar[int]
    AREA_UNIT_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    verdict: Verdict
    reason: str
    rule: str
    text: str
    class_name: str
    zone: str
    detections: _containers.RepeatedScalarFieldContainer[int]
    score: float
    threshold: float
    at: _common_pb2.Point
    area: float
    area_unit: str
    count: int
    def __init__(self, verdict: _Optional[_Union[Verdict, str]] = ..., reason: _Optional[str] = ..., rule: _Optional[str] = ..., text: _Optional[str] = ..., class_name: _Optional[str] = ..., zone: _Optional[str] = ..., detections: _Optional[_Iterable[int]] = ..., score: _Optional[float] = ..., threshold: _Optional[float] = ..., at: _Optional[_Union[_common_pb2.Point, _Mapping]] = ..., area: _Optional[float] = ..., area_unit: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("part", "verdict", "reason_codes", "recipe_version", "model_id", "model_version", "serial", "inference", "ocr", "timings", "decided_unix_ns", "explanation")
    PART_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    REASON_CODES_FIELD_NUMBER: _ClassVar[int]
    RECIPE_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_FIELD_NUMBER: _ClassVar[int]
    OCR_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    DECIDED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    part: _common_pb2.Part
    verdict: Verdict
    reason_codes: _containers.RepeatedScalarFieldContainer[str]
    recipe_version: str
    model_id: str
    model_version: str
    serial: str
    inference: _inference_pb2.InferenceResult
    ocr: _ocr_pb2.OcrResult
    timings: _containers.RepeatedCompositeFieldContainer[_common_pb2.StageTiming]
    decided_unix_ns: int
    explanation: _containers.RepeatedCompositeFieldContainer[Finding]
    def __init__(self, part: _Optional[_Union[_common_pb2.Part, _Mapping]] = ..., verdict: _Optional[_Union[Verdict, str]] = ..., reason_codes: _Optional[_Iterable[str]] = ..., recipe_version: _Optional[str] = ..., model_id: _Optional[str] = ..., model_version: _Optional[str] = ..., serial: _Optional[str] = ..., inference: _Optional[_Union[_inference_pb2.InferenceResult, _Mapping]] = ..., ocr: _Optional[_Union[_ocr_pb2.OcrResult, _Mapping]] = ..., timings: _Optional[_Iterable[_Union[_common_pb2.StageTiming, _Mapping]]] = ..., decided_unix_ns: _Optional[int] = ..., explanation: _Optional[_Iterable[_Union[Finding, _Mapping]]] = ...) -> None: ...
