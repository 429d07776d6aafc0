"""Parts, decisions and PLC acks as the services receive them, for their tests."""

from __future__ import annotations

from lineguard.contracts import new_inspection_id, now_ns
from lineguard.v1.common_pb2 import Box, Part, Point, Polygon, StageTiming
from lineguard.v1.decision_pb2 import Decision, Verdict
from lineguard.v1.inference_pb2 import Detection, InferenceResult
from lineguard.v1.ocr_pb2 import Code, OcrResult
from lineguard.v1.plc_pb2 import PlcAck

T0_NS = 1_780_000_000_123_456_789  # 2026-05-28T20:26:40.123456789Z


def triggered_part(seq: int = 1, *, station: str = "s1", recipe: str = "pcb-a", line: str = "l1") -> Part:
    """A part of the demo line as the gateway opens it: a new inspection id, triggered now."""
    return Part(
        inspection_id=new_inspection_id(),
        line=line,
        station=station,
        recipe_id=recipe,
        sequence=seq,
        triggered_unix_ns=now_ns(),
    )


def sample_decision(
    sequence: int = 1,
    *,
    verdict: Verdict = Verdict.VERDICT_FAIL,
    station: str = "s1",
    serial: str = "LG-00000001",
    triggered_ns: int | None = None,
) -> Decision:
    """A decision with two defects (one with a mask), one code and the usual timings."""
    triggered = triggered_ns if triggered_ns is not None else T0_NS + sequence * 1_000_000_000
    part = Part(
        inspection_id=new_inspection_id(),
        line="l1",
        station=station,
        recipe_id="pcb-a",
        sequence=sequence,
        triggered_unix_ns=triggered,
    )
    inference = InferenceResult(
        part=part,
        model_id="deeppcb-yolo11n",
        model_version="3",
        image_width=640,
        image_height=800,
        detections=[
            Detection(
                class_name="short",
                class_id=2,
                score=0.9,
                box=Box(x1=10, y1=20, x2=30.5, y2=40),
                area_px=409.5,
                area_mm2=0.1777,
            ),
            Detection(
                class_name="spur",
                class_id=4,
                score=0.61,
                box=Box(x1=100, y1=100, x2=110, y2=120),
                mask=Polygon(points=[Point(x=100, y=100), Point(x=110, y=100), Point(x=105, y=120)]),
                area_px=100.0,
            ),
        ],
    )
    ocr = OcrResult(
        part=part,
        codes=[
            Code(
                symbology="DataMatrix",
                text=serial,
                box=Box(x1=5, y1=650, x2=85, y2=730),
                outline=Polygon(points=[Point(x=5, y=650), Point(x=85, y=650), Point(x=85, y=730), Point(x=5, y=730)]),
            )
        ],
    )
    return Decision(
        part=part,
        verdict=verdict,
        reason_codes=["DEFECT_SHORT", "DEFECT_SPUR"],
        recipe_version="1",
        model_id="deeppcb-yolo11n",
        model_version="3",
        serial=serial,
        inference=inference,
        ocr=ocr,
        timings=[
            StageTiming(stage="trigger_to_inference", ms=41.5),
            StageTiming(stage="decision", ms=0.25),
            StageTiming(stage="total", ms=55.75),
        ],
        decided_unix_ns=triggered + 55_750_000,
    )


def sample_ack(
    decision: Decision, *, delivered: bool = True, delivered_ns: int | None = None, verdict: Verdict | None = None
) -> PlcAck:
    return PlcAck(
        part=decision.part,
        verdict=decision.verdict if verdict is None else verdict,
        reason_codes=decision.reason_codes,
        protocol="opcua",
        delivered=delivered,
        delivered_unix_ns=(delivered_ns or decision.decided_unix_ns + 3_000_000) if delivered else 0,
    )


def busy_decision(sequence: int, *, defects: int = 3, codes: int = 2, triggered_ns: int | None = None) -> Decision:
    """A FAIL with `defects` detections and `codes` reads, a reason per defect class: the MES writer's load unit."""
    decision = sample_decision(sequence, serial=f"LG-{sequence % 100_000_000:08d}", triggered_ns=triggered_ns)
    template = list(decision.inference.detections)
    del decision.inference.detections[:]
    for i in range(defects):
        detection = decision.inference.detections.add()
        detection.CopyFrom(template[i % len(template)])
        detection.box.x1 += 40 * i
        detection.box.x2 += 40 * i
    code = Code()
    code.CopyFrom(decision.ocr.codes[0])
    del decision.ocr.codes[:]
    for i in range(codes):
        read = decision.ocr.codes.add()
        read.CopyFrom(code)
        read.symbology = "DataMatrix" if i == 0 else "Code128"
    del decision.reason_codes[:]
    decision.reason_codes.extend(sorted({f"DEFECT_{d.class_name.upper()}" for d in decision.inference.detections}))
    return decision
