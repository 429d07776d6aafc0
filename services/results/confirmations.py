"""People's confirmations of verdicts: who said which verdict is true for an inspection, when and why.

Kept in `verdict_confirmations` beside the inspection, which they never change: the record stays what the line
decided, the confirmations are the ground truth the shadow report (lineguard.modelops.shadow_report) and the
monthly evaluation read (the latest one of a part wins). One function writes them, for the API
(`POST /v1/inspections/{id}/confirmations`) and the command line (`lineguard confirm`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select

from lineguard.services.results.schema import Inspection, VerdictConfirmation

# What a person can say a part is; ERROR is the line's own failure, not a property of the part.
CONFIRMABLE: tuple[str, ...] = ("PASS", "REWORK", "FAIL")
COMMENT_MAX = 2000
WHO_MAX = VerdictConfirmation.confirmed_by.type.length


class UnknownInspection(LookupError):
    """No inspection has that id."""

    def __init__(self, inspection_id: str):
        super().__init__(f"no inspection {inspection_id!r}")
        self.inspection_id = inspection_id


class BadConfirmation(ValueError):
    """A confirmation that cannot be kept: `field` names what is wrong, the message says why."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Confirmation:
    id: int
    inspection_id: str
    verdict: str
    recorded_verdict: str  # the line's verdict, as recorded (never changed by this)
    confirmed_by: str
    confirmed_at: datetime
    comment: str

    @property
    def overrules(self) -> bool:
        return self.verdict != self.recorded_verdict

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "overrules": self.overrules}


def check(verdict: str, by: str, comment: str, recorded: str) -> None:
    """Why these values cannot be kept for a part the line judged `recorded` (BadConfirmation), or nothing."""
    if verdict not in CONFIRMABLE:
        raise BadConfirmation("verdict", f"{verdict!r} is not one of {', '.join(CONFIRMABLE)}")
    if not by.strip() or len(by) > WHO_MAX:
        raise BadConfirmation("confirmed_by", f"who confirms: 1 to {WHO_MAX} characters")
    if len(comment) > COMMENT_MAX:
        raise BadConfirmation("comment", f"at most {COMMENT_MAX} characters (got {len(comment)})")
    if verdict != recorded and not comment.strip():
        # An overruling without a reason cannot be reviewed later: who was right, and why?
        raise BadConfirmation("comment", f"say why when overruling the line's {recorded} with {verdict}")


def _recorded_verdict(conn: Connection, inspection_id: str) -> str:
    """The verdict the line recorded for the inspection; UnknownInspection when there is no such inspection."""
    recorded = conn.execute(
        select(Inspection.verdict).where(Inspection.inspection_id == inspection_id)
    ).scalar_one_or_none()
    if recorded is None:
        raise UnknownInspection(inspection_id)
    return str(recorded)


def confirm(engine: Engine, inspection_id: str, verdict: str, by: str, comment: str = "") -> Confirmation:
    """Keep a person's verdict for the inspection (UnknownInspection, BadConfirmation); the inspection is untouched."""
    with engine.begin() as conn:
        recorded = _recorded_verdict(conn, inspection_id)
        check(verdict, by, comment, recorded)
        at = datetime.now(UTC)
        row_id = conn.execute(
            insert(VerdictConfirmation)
            .values(inspection_id=inspection_id, verdict=verdict, confirmed_by=by, confirmed_at=at, comment=comment)
            .returning(VerdictConfirmation.id)
        ).scalar_one()
    return Confirmation(row_id, inspection_id, verdict, recorded, by, at, comment)


def confirmations(engine: Engine, inspection_id: str) -> list[Confirmation]:
    """The inspection's confirmations, oldest first (UnknownInspection when there is no such inspection)."""
    with engine.connect() as conn:
        recorded = _recorded_verdict(conn, inspection_id)
        rows = conn.execute(
            select(VerdictConfirmation)
            .where(VerdictConfirmation.inspection_id == inspection_id)
            .order_by(VerdictConfirmation.confirmed_at, VerdictConfirmation.id)
        ).all()
    return [
        Confirmation(r.id, r.inspection_id, r.verdict, recorded, r.confirmed_by, r.confirmed_at, r.comment)
        for r in rows
    ]
