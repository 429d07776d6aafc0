"""OPC UA for Machine Vision (OPC 40100-1, v1.0.0): what the gateway's vision-system objects mean.

The gateway's OPC UA server loads the official NodeSet (`NODESET`, the OPC Foundation's file with
its licence header) and makes one `VisionSystemType` instance per station, named by the station id,
under the Objects folder. A client needs only the standard: the namespace URI, the type NodeIds
below (from the NodeSet's NodeIds.csv) and the standard browse names. Names only: no asyncua here,
so the simulated PLC, docs and tools read it as data.

What lineguard fills in where the standard leaves it to the vision system:
- JobId and ResultId are the inspection id (a UUIDv7) every record of the part carries.
- A recipe's ExternalId and InternalId are both its id in the line configuration (`recipes:`),
  its Version the recipe's version; every recipe is also a product of the same id.
- ResultContent is RESULT_CONTENT: the verdict code (1 PASS, anything else is not a pass),
  the verdict name and the reason codes, comma separated.
- ResultState is 4 (Failed) for a part that was not inspected: an ERROR verdict, or a reason in
  lineguard.reasons.NOT_INSPECTED_REASONS (TIMEOUT from either deadline, NO_INFERENCE, NO_OCR, OVERLOAD);
  1 (Completed) for a part that was judged, whatever its verdict (a FAIL for a defect included).
"""

from __future__ import annotations

from pathlib import Path

NAMESPACE_URI = "http://opcfoundation.org/UA/MachineVision"
NODESET = Path(__file__).with_name("nodesets") / "Opc.Ua.MachineVision.NodeSet2.xml"

# Numeric NodeIds in NAMESPACE_URI (NodeIds.csv of the NodeSet).
VISION_SYSTEM_TYPE = 1003
RESULT_TYPE = 2002  # VariableType of each entry in ResultManagement/Results
JOB_STARTED_EVENT_TYPE = 1013
RECIPE_PREPARED_EVENT_TYPE = 1022
READY_EVENT_TYPE = 1023
RESULT_READY_EVENT_TYPE = 1024
ERROR_EVENT_TYPE = 1019  # a service the station needs is down: the system enters Error, unless Halted
ERROR_RESOLVED_EVENT_TYPE = 1020  # ... and beats again: Error -> Operational (a Halted system stays Halted)
ACQUISITION_DONE_EVENT_TYPE = 1025  # the part's image is taken (the gateway sees its frame stored)
# OPC 40100-1 11.4.5: a condition the vision system reports while it operates on (no state change): the drift
# watch's alert (docs/drift.md). Reported by its events only (no condition node; see WARNING_CONDITION below).
VISION_WARNING_CONDITION_TYPE = 1034

# VisionStateMachine's states and the automatic-mode sub-machine's (the states of the types):
# CurrentState/Id holds one of these.
PREOPERATIONAL = "Preoperational"
HALTED = "Halted"
ERROR = "Error"
OPERATIONAL = "Operational"
INITIALIZED = "Initialized"
READY = "Ready"
SINGLE_EXECUTION = "SingleExecution"
CONTINUOUS_EXECUTION = "ContinuousExecution"
STATE_NODE_IDS: dict[str, int] = {
    PREOPERATIONAL: 5028,
    HALTED: 5029,
    ERROR: 5030,
    OPERATIONAL: 5031,
    INITIALIZED: 5056,
    READY: 5057,
    SINGLE_EXECUTION: 5058,
    CONTINUOUS_EXECUTION: 5059,
}
STATE_NUMBERS: dict[str, int] = {
    PREOPERATIONAL: 1,
    HALTED: 2,
    ERROR: 3,
    OPERATIONAL: 4,
    INITIALIZED: 5,
    READY: 6,
    SINGLE_EXECUTION: 7,
    CONTINUOUS_EXECUTION: 8,
}

# Browse paths from the VisionSystemType instance (standard browse names, namespace NAMESPACE_URI).
STATE_MACHINE = "VisionStateMachine"
AUTOMATIC_MODE = "AutomaticModeStateMachine"
RECIPE_MANAGEMENT = "RecipeManagement"
RESULT_MANAGEMENT = "ResultManagement"
RESULTS_FOLDER = "Results"
SYSTEM_STATE = "SystemState"

# SystemState (SystemStateDataType): the SEMI E10 equipment states.
SEMI_E10: dict[str, int] = {
    "PRD": 1,  # productive: parts in flight
    "SBY": 2,  # standby: operational, waiting for a part
    "ENG": 3,  # engineering
    "SDT": 4,  # scheduled downtime: being set up (Preoperational)
    "UDT": 5,  # unscheduled downtime: Error
    "NST": 6,  # non-scheduled: Halted
}

# The drift warning condition: its ConditionName, the last part of its ConditionId (a string NodeId in the gateway's
# namespace, MachineVision/<station>/DriftWarning, naming no node), its ErrorCode (the code a register PLC's `error`
# reads for it, lineguard.contracts.registers.Error.DRIFT_WARNING) and Severity (1..1000: a warning, below an Error).
WARNING_CONDITION = "DriftWarning"
WARNING_ERROR_CODE = 10
WARNING_SEVERITY = 400

# ResultStateDataType values (OPC 40100-1 12.19).
RESULT_STATE_COMPLETED = 1
RESULT_STATE_FAILED = 4

# ResultContent, element by element: (name, OPC UA built-in type).
RESULT_CONTENT: tuple[tuple[str, str], ...] = (
    ("Verdict", "Int32"),  # lineguard.contracts.opcua.RESULT_VERDICTS: 1 PASS, 2 FAIL, 3 REWORK, 4 ERROR
    ("VerdictName", "String"),
    ("Reasons", "String"),  # reason codes, comma separated, "" for a pass
)

# Jobs started through StartSingleJob / StartContinuous are numbered from here (the trigger sequence in
# every record), so they never meet the sequence of a PLC using the simple profile's Trigger below 2^31.
JOB_SEQUENCE_BASE = 0x8000_0000
