"""The shadow report: how a candidate's would-be verdicts compare with the live ones and with people's.

Read from the MES database's documented tables (`inspections`, `shadow_verdicts`, `verdict_confirmations`,
`inspection_images`; docs/mes-schema.md) with plain SQL: the library never imports the results service.

- the confusion of live against candidate verdicts, over every part both judged;
- the parts they disagree on, each with its image links (the archive's URIs);
- against the parts a person confirmed (the latest confirmation of each is the truth): the candidate's escape
  rate (a bad part it would have passed, over the bad parts) and false-reject rate (a good part it would not have
  passed, over the good parts), the live model's beside them;
- new escapes: parts the candidate would pass that the live model did not, unless a person confirmed them good.
  An unconfirmed disagreement counts: promotion on "no new escape" is fail-safe."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from lineguard.modelops.rates import Rates
from lineguard.timestamps import utc_iso

VERDICTS = ("PASS", "REWORK", "FAIL", "ERROR")

PAIRS = sa.text(
    "SELECT i.inspection_id, i.serial, i.line, i.station, i.decided_at, i.verdict AS live, s.verdict AS candidate, "
    "s.reason_codes AS candidate_reasons, i.reason_codes AS live_reasons "
    "FROM shadow_verdicts AS s JOIN inspections AS i ON i.inspection_id = s.inspection_id "
    "WHERE s.model_id = :model_id AND s.model_version = :version ORDER BY i.decided_at, i.inspection_id"
)
CONFIRMED = sa.text(
    "SELECT c.inspection_id, c.verdict, c.confirmed_by, c.confirmed_at, c.comment FROM verdict_confirmations AS c "
    "JOIN shadow_verdicts AS s ON s.inspection_id = c.inspection_id "
    "WHERE s.model_id = :model_id AND s.model_version = :version ORDER BY c.confirmed_at, c.id"
)
IMAGES = sa.text(
    "SELECT m.inspection_id, m.kind, m.uri FROM inspection_images AS m "
    "JOIN shadow_verdicts AS s ON s.inspection_id = m.inspection_id "
    "WHERE s.model_id = :model_id AND s.model_version = :version AND m.deleted_at IS NULL ORDER BY m.id"
)
CANDIDATES = sa.text(
    "SELECT model_id, model_version, COUNT(*) AS parts, MAX(decided_at) AS last FROM shadow_verdicts "
    "GROUP BY model_id, model_version ORDER BY MAX(decided_at) DESC"
)


class ReportError(RuntimeError):
    """The database cannot give the report (not there, no shadow verdicts of that candidate); the text says why."""


@dataclass
class ShadowReport:
    model_id: str
    version: str
    parts: int
    confusion: dict[str, dict[str, int]]  # live verdict -> candidate verdict -> parts
    disagreements: list[dict[str, Any]]
    confirmed: int
    candidate: Rates
    live: Rates
    new_escapes: list[str] = field(default_factory=list)

    @property
    def agreement(self) -> float | None:
        return (self.parts - len(self.disagreements)) / self.parts if self.parts else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "version": self.version,
            "parts": self.parts,
            "agreement": self.agreement,
            "confusion": self.confusion,
            "disagreements": self.disagreements,
            "confirmed": self.confirmed,
            "candidate": self.candidate.to_dict(),
            "live": self.live.to_dict(),
            "new_escapes": self.new_escapes,
        }


def rates(verdicts: dict[str, str], truth: dict[str, str]) -> Rates:
    """`verdicts` (by inspection id) against `truth` (the confirmed verdicts): a part is good when its truth is PASS."""
    bad = [i for i, t in truth.items() if t != "PASS" and i in verdicts]
    good = [i for i, t in truth.items() if t == "PASS" and i in verdicts]
    return Rates(
        bad=len(bad),
        good=len(good),
        escapes=sum(verdicts[i] == "PASS" for i in bad),
        false_rejects=sum(verdicts[i] != "PASS" for i in good),
    )


def build_report(
    model_id: str,
    version: str,
    pairs: list[dict[str, Any]],
    confirmations: list[dict[str, Any]],
    images: list[dict[str, Any]] | None = None,
) -> ShadowReport:
    """The report from rows (the plain function the SQL feeds; tests call it directly)."""
    confusion = {live: dict.fromkeys(VERDICTS, 0) for live in VERDICTS}
    truth: dict[str, str] = {}
    for c in confirmations:  # oldest first: the latest confirmation of a part wins
        truth[c["inspection_id"]] = c["verdict"]
    links: dict[str, list[dict[str, str]]] = {}
    for m in images or []:
        links.setdefault(m["inspection_id"], []).append({"kind": m["kind"], "uri": m["uri"]})
    disagreements, new_escapes = [], []
    for p in pairs:
        confusion.setdefault(p["live"], dict.fromkeys(VERDICTS, 0))
        confusion[p["live"]][p["candidate"]] = confusion[p["live"]].get(p["candidate"], 0) + 1
        if p["live"] != p["candidate"]:
            disagreements.append(
                {
                    "inspection_id": p["inspection_id"],
                    "serial": p["serial"],
                    "decided_at": utc_iso(p["decided_at"]),
                    "live": p["live"],
                    "candidate": p["candidate"],
                    "live_reasons": p["live_reasons"],
                    "candidate_reasons": p["candidate_reasons"],
                    "confirmed": truth.get(p["inspection_id"]),
                    "images": links.get(p["inspection_id"], []),
                }
            )
            if p["candidate"] == "PASS" and truth.get(p["inspection_id"], p["live"]) != "PASS":
                new_escapes.append(p["inspection_id"])
    live = {p["inspection_id"]: p["live"] for p in pairs}
    candidate = {p["inspection_id"]: p["candidate"] for p in pairs}
    return ShadowReport(
        model_id=model_id,
        version=version,
        parts=len(pairs),
        confusion=confusion,
        disagreements=disagreements,
        confirmed=sum(i in live for i in truth),
        candidate=rates(candidate, truth),
        live=rates(live, truth),
        new_escapes=new_escapes,
    )


def _engine(url: str) -> sa.Engine:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and not Path(parsed.database).exists():
        raise ReportError(f"no database at {parsed.database}")  # connecting would make an empty one
    return sa.create_engine(url)


def read_report(url: str, model_id: str | None = None, version: str | None = None) -> ShadowReport:
    """The report of candidate `model_id` `version` (default: the one with the latest shadow verdict)."""
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            if "shadow_verdicts" not in sa.inspect(conn).get_table_names():
                raise ReportError("the MES database has no shadow_verdicts table: run `lineguard db upgrade`")
            if model_id is None or version is None:
                latest = conn.execute(CANDIDATES).first()
                if latest is None:
                    raise ReportError("no shadow verdicts yet: start one with `lineguard model shadow start`")
                model_id, version = latest.model_id, latest.model_version
            names = {"model_id": model_id, "version": version}
            pairs = [dict(r._mapping) for r in conn.execute(PAIRS, names)]
            confirmations = [dict(r._mapping) for r in conn.execute(CONFIRMED, names)]
            images = [dict(r._mapping) for r in conn.execute(IMAGES, names)]
    finally:
        engine.dispose()
    return build_report(model_id, version, pairs, confirmations, images)


def promotion_refusal(report: ShadowReport, min_parts: int) -> str | None:
    """Why the candidate may not be promoted on this report (None: it may): fewer than `min_parts` parts judged
    in shadow, or any new escape."""
    if report.parts < min_parts:
        return (
            f"{report.model_id} {report.version} judged {report.parts} parts in shadow, fewer than the {min_parts} "
            "required (--require-shadow)"
        )
    if report.new_escapes:
        shown = ", ".join(report.new_escapes[:5]) + (" ..." if len(report.new_escapes) > 5 else "")
        return (
            f"{report.model_id} {report.version} would pass {len(report.new_escapes)} parts the live model did not "
            f"and no person confirmed good (new escapes: {shown})"
        )
    return None


def markdown(report: ShadowReport) -> str:
    """The report for a person."""

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    lines = [
        f"# Shadow report: {report.model_id} {report.version}",
        "",
        f"{report.parts} parts judged by both; agreement {pct(report.agreement)}; {report.confirmed} confirmed by a "
        f"person; new escapes: {len(report.new_escapes)}.",
        "",
        "## Live (rows) against candidate (columns)",
        "",
        "| live \\ candidate | " + " | ".join(VERDICTS) + " |",
        "| --- | " + " | ".join("---" for _ in VERDICTS) + " |",
    ]
    for live in VERDICTS:
        lines.append(f"| {live} | " + " | ".join(str(report.confusion[live].get(c, 0)) for c in VERDICTS) + " |")
    lines += [
        "",
        "## Against confirmed parts",
        "",
        "| model | bad | escapes | escape rate | good | false rejects | false-reject rate |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in (("candidate", report.candidate), ("live", report.live)):
        lines.append(
            f"| {name} | {r.bad} | {r.escapes} | {pct(r.escape_rate)} | {r.good} | {r.false_rejects} | "
            f"{pct(r.false_reject_rate)} |"
        )
    lines += ["", "## Parts they disagree on", ""]
    if not report.disagreements:
        lines.append("none")
    for d in report.disagreements:
        images = ", ".join(f"[{m['kind']}]({m['uri']})" for m in d["images"]) or "no image kept"
        confirmed = f", confirmed {d['confirmed']}" if d["confirmed"] else ""
        lines.append(
            f"- {d['inspection_id']} (serial {d['serial'] or '-'}): live {d['live']}, candidate {d['candidate']}"
            f"{confirmed}; {images}"
        )
    return "\n".join(lines) + "\n"
