from lineguard.v1 import common_pb2 as _common_pb2
from lineguard.v1 import decision_pb2 as _decision_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DriftLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DRIFT_LEVEL_UNSPECIFIED: _ClassVar[DriftLevel]
    DRIFT_LEVEL_OK: _ClassVar[DriftLevel]
    DRIFT_LEVEL_WARNING: _ClassVar[DriftLevel]
    DRIFT_LEVEL_ALERT: _ClassVar[DriftLevel]
DRIFT_LEVEL_UNSPECIFIED: DriftLevel
DRIFT_LEVEL_OK: DriftLevel
DRIFT_LEVEL_WARNING: DriftLevel
DRIFT_LEVEL_ALERT: DriftLevel

class FeatureDrift(_message.Message):
    __slots__ = ("feature", "psi", "level", "baseline_mean", "current_mean")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    BASELINE_MEAN_FIELD_NUMBER: _ClassVar[int]
    CURRENT_MEAN_FIELD_NUMBER: _ClassVar[int]
    feature: str
    psi: float
    level: DriftLevel
    baseline_mean: float
    current_mean: float
    def __init__(self, feature: _Optional[str] = ..., psi: _Optional[float] = ..., level: _Optional[_Union[DriftLevel, str]] = ..., baseline_mean: _Optional[float] = ..., current_mean: _Optional[float] = ...) -> None: ...

class DriftState(_message.Message):
    __slots__ = ("part", "shift", "level", "features", "samples", "baseline", "computed_unix_ns", "selftest", "detail")
    PART_FIELD_NUMBER: _ClassVar[int]
    SHIFT_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    SELFTEST_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    part: _common_pb2.Part
    shift: str
    level: DriftLevel
    features: _containers.RepeatedCompositeFieldContainer[FeatureDrift]
    samples: int
    baseline: str
    computed_unix_ns: int
    selftest: str
    detail: str
    def __init__(self, part: _Optional[_Union[_common_pb2.Part, _Mapping]] = ..., shift: _Optional[str] = ..., level: _Optional[_Union[DriftLevel, str]] = ..., features: _Optional[_Iterable[_Union[FeatureDrift, _Mapping]]] = ..., samples: _Optional[int] = ..., baseline: _Optional[str] = ..., computed_unix_ns: _Optional[int] = ..., selftest: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class SelfTestCase(_message.Message):
    __slots__ = ("name", "expected", "verdict", "reason_codes", "inspection_id", "changed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    REASON_CODES_FIELD_NUMBER: _ClassVar[int]
    INSPECTION_ID_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    name: str
    expected: _decision_pb2.Verdict
    verdict: _decision_pb2.Verdict
    reason_codes: _containers.RepeatedScalarFieldContainer[str]
    inspection_id: str
    changed: bool
    def __init__(self, name: _Optional[str] = ..., expected: _Optional[_Union[_decision_pb2.Verdict, str]] = ..., verdict: _Optional[_Union[_decision_pb2.Verdict, str]] = ..., reason_codes: _Optional[_Iterable[str]] = ..., inspection_id: _Optional[str] = ..., changed: _Optional[bool] = ...) -> None: ...

class SelfTestReport(_message.Message):
    __slots__ = ("part", "request_id", "started_unix_ns", "finished_unix_ns", "cases", "changed")
    PART_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    CASES_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    part: _common_pb2.Part
    request_id: str
    started_unix_ns: int
    finished_unix_ns: int
    cases: _containers.RepeatedCompositeFieldContainer[SelfTestCase]
    changed: bool
    def __init__(self, part: _Optional[_Union[_common_pb2.Part, _Mapping]] = ..., request_id: _Optional[str] = ..., started_unix_ns: _Optional[int] = ..., finished_unix_ns: _Optional[int] = ..., cases: _Optional[_Iterable[_Union[SelfTestCase, _Mapping]]] = ..., changed: _Optional[bool] = ...) -> None: ...
