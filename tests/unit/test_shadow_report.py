"""The shadow report's figures from rows: confusion, disagreements with image links, rates against confirmed parts,
new escapes, and the promotion rule built on them."""

from __future__ import annotations

from lineguard.modelops.shadow_report import build_report, markdown, promotion_refusal


def pair(i: int, live: str, candidate: str) -> dict:
    return {
        "inspection_id": f"id-{i}",
        "serial": f"LG-{i:08d}",
        "decided_at": "2026-12-01 10:00:00",
        "live": live,
        "candidate": candidate,
        "live_reasons": "",
        "candidate_reasons": "",
    }


def test_the_report_counts_against_people_and_flags_new_escapes() -> None:
    pairs = [pair(1, "FAIL", "FAIL"), pair(2, "FAIL", "PASS"), pair(3, "PASS", "FAIL"), pair(4, "FAIL", "PASS")]
    confirmations = [
        {"inspection_id": "id-1", "verdict": "FAIL"},
        {"inspection_id": "id-3", "verdict": "FAIL"},  # overruled later: the latest is the truth
        {"inspection_id": "id-3", "verdict": "PASS"},
        {"inspection_id": "id-4", "verdict": "PASS"},  # a person says the live FAIL was wrong
    ]
    images = [{"inspection_id": "id-2", "kind": "image", "uri": "file:///archive/id-2.png"}]
    report = build_report("cand", "2", pairs, confirmations, images)

    assert report.parts == 4 and report.agreement == 0.25
    assert report.confusion["FAIL"]["PASS"] == 2 and report.confusion["PASS"]["FAIL"] == 1
    assert [d["inspection_id"] for d in report.disagreements] == ["id-2", "id-3", "id-4"]
    assert report.disagreements[0]["images"] == [{"kind": "image", "uri": "file:///archive/id-2.png"}]
    # Confirmed: id-1 bad, id-3 good, id-4 good. Candidate: passes neither bad; rejects id-3 (good).
    assert (report.candidate.bad, report.candidate.escapes, report.candidate.good, report.candidate.false_rejects) == (
        1,
        0,
        2,
        1,
    )
    assert (report.live.false_rejects, report.live.false_reject_rate) == (1, 0.5)
    # id-2: the candidate passes what the live model failed and nobody confirmed good; id-4 was confirmed good.
    assert report.new_escapes == ["id-2"]
    assert "new escapes" in promotion_refusal(report, 1)
    assert "fewer than the 10" in promotion_refusal(report, 10)
    assert "| FAIL | 2 | 0 | 1 | 0 |" in markdown(report) and "file:///archive/id-2.png" in markdown(report)


def test_a_candidate_that_agrees_may_be_promoted() -> None:
    report = build_report("cand", "2", [pair(i, "FAIL", "FAIL") for i in range(5)], [])
    assert report.new_escapes == [] and report.agreement == 1.0
    assert promotion_refusal(report, 5) is None
