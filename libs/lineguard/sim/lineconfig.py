"""The configuration `lineguard demo` and the tests run the line with."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from lineguard.contracts import SERIAL_PATTERN


def demo_config_dict(
    *,
    nats_url: str,
    database_url: str,
    opcua_endpoint: str,
    parts_rate: float | None = None,
    deadline_ms: int = 3000,
    plc: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One line, one station, the packaged sample boards and model; `plc` replaces the station's OPC UA server."""
    return {
        "line": "l1",
        "nats": {"url": nats_url},
        "stations": [
            {
                "id": "s1",
                "recipe": "pcb-a",
                "camera": {"kind": "simulator", "px_per_mm": 48.0, "stamp_serial": True},
                # The demo profile: None and anonymous operators, which the gateway says when it starts.
                "plc": plc or {"protocol": "opcua", "endpoint": opcua_endpoint, "security": {"profile": "demo"}},
            }
        ],
        "recipes": {
            "pcb-a": {
                "version": "1",
                "deadline_ms": deadline_ms,
                "min_score": 0.5,
                "classes": {
                    "open": {"verdict": "fail"},
                    "short": {"verdict": "fail"},
                    "mousebite": {"verdict": "rework"},
                    "spur": {"verdict": "rework"},
                    "copper": {"verdict": "rework"},
                    "pin-hole": {"verdict": "rework"},
                },
                # The simulated camera prints the serial in a strip below the 640 x 640 board.
                "inspect_roi": [0, 0, 640, 640],
                "code_roi": [0, 640, 640, 160],
                "require_code": True,
                "code_pattern": SERIAL_PATTERN,
                # The strip's DataMatrix and the printed serial beside it must agree (CODE_TEXT_MISMATCH);
                # the printed line's box: recognition only.
                "ocr": {
                    "formats": ["DataMatrix"],
                    "text_roi": [150, 680, 490, 80],
                    "fields": {"serial": {"symbology": "DataMatrix", "pattern": SERIAL_PATTERN, "match_text": True}},
                },
            }
        },
        "database": {"url": database_url},
    }


def write_config(path: Path, config: dict[str, Any]) -> Path:
    """Write `config` as YAML readable by its owner only (0600 from creation): a line's file may name secrets."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(yaml.safe_dump(config, sort_keys=False))
    os.chmod(path, 0o600)  # an older file keeps its mode through O_CREAT
    return path
