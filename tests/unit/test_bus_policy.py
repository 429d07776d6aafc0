"""The failure policy's rule, as a table (tests/integration/test_bus_failure_policy.py applies it on a real server)."""

from __future__ import annotations

import pytest

from lineguard.bus import BadMessage, HandBack, Retry
from lineguard.bus.policy import Settlement, settle_failure

GAVE_UP_DB = "gave up after 3 deliveries: ConnectionError: db down"
GAVE_UP_RETRY = "gave up after 3 deliveries: Retry: db restarting"


@pytest.mark.parametrize(
    ("exc", "tries", "retry_forever", "expected"),
    [
        (ConnectionError("db down"), 1, False, Settlement("retry", delay_s=1.5)),
        (ConnectionError("db down"), 3, False, Settlement("give_up", reason=GAVE_UP_DB)),
        (ConnectionError("db down"), 3, True, Settlement("give_up", reason=GAVE_UP_DB)),  # not a Retry: still given up
        (Retry("db restarting", delay_s=0.1), 1, False, Settlement("retry", delay_s=0.1)),
        (Retry("db restarting"), 2, False, Settlement("retry", delay_s=1.5)),
        (Retry("db restarting"), 3, False, Settlement("give_up", reason=GAVE_UP_RETRY)),
        (Retry("db restarting", delay_s=0.1), 99, True, Settlement("retry", delay_s=0.1)),
        (BadMessage("unknown recipe 'x'"), 1, False, Settlement("dead_letter", reason="unknown recipe 'x'")),
        (BadMessage("unknown recipe 'x'"), 1, True, Settlement("dead_letter", reason="unknown recipe 'x'")),
        (HandBack("stopping"), 99, False, Settlement("hand_back")),
    ],
)
def test_what_becomes_of_a_failed_message(
    exc: BaseException, tries: int, retry_forever: bool, expected: Settlement
) -> None:
    got = settle_failure(exc, tries=tries, max_deliver=3, nak_delay_s=1.5, retry_forever=retry_forever)
    assert got == expected
    assert got.outcome == ("dead" if expected.action in ("dead_letter", "give_up") else "retry")
