"""Admission by deadline (lineguard.runtime.admission), called directly: the frames ahead at the stage's recent
pace, plus the path after it, must fit before the part's deadline."""

from __future__ import annotations

from lineguard.runtime.admission import AFTER_RUN_S, Pace, can_finish, overload_text, part_deadline_s, reserve_s
from lineguard.v1.common_pb2 import Part


def test_a_frame_is_admitted_while_the_frames_ahead_of_it_fit_before_its_deadline() -> None:
    pace = Pace(per_frame_s=0.1)
    deadline = 10.0 + 1.0  # 1 s left at now = 10
    fits = (1.0 - AFTER_RUN_S) / 0.1  # frames (itself included) that fit
    assert can_finish(10.0, deadline, ahead=int(fits) - 1, pace=pace)
    assert not can_finish(10.0, deadline, ahead=int(fits), pace=pace)
    assert not can_finish(10.0, 10.05, ahead=0, pace=pace)  # not even its own run fits


def test_before_the_model_ran_every_frame_is_admitted_and_the_pace_follows_the_runs() -> None:
    pace = Pace()
    assert can_finish(0.0, 0.01, ahead=100, pace=pace)
    pace.observe(0.4, 4)  # a batch of 4 in 0.4 s
    assert pace.per_frame_s == 0.1
    for _ in range(30):
        pace.observe(0.3, 1)  # the model slowed down: the estimate follows within a few batches
    assert 0.29 < (pace.per_frame_s or 0) <= 0.3
    pace.observe(1.0, 0)  # nothing ran: nothing learnt
    assert 0.29 < (pace.per_frame_s or 0) <= 0.3
    assert overload_text(7, pace, 0.5).startswith("OVERLOAD: 7 frames ahead at 3")


def test_a_model_whose_time_jumps_is_planned_with_its_spread_and_long_deadlines_keep_a_share_in_reserve() -> None:
    steady, jumpy = Pace(), Pace()
    for took in [0.1] * 20:
        steady.observe(took, 1)
    for took in [0.05, 0.15] * 10:
        jumpy.observe(took, 1)
    assert steady.planned_s == steady.per_frame_s == 0.1  # no spread
    assert (jumpy.planned_s or 0) > 0.13  # about the same mean, planned with its spread
    # 10 frames of 0.1 s fit in 1.5 s with the 0.15 s reserve, not with jumpy's pace.
    assert can_finish(0.0, 1.5, 9, steady, reserve=0.15) and not can_finish(0.0, 1.5, 9, jumpy, reserve=0.15)
    assert reserve_s(1000) == AFTER_RUN_S and reserve_s(3000) == 0.3


def test_a_part_must_be_finished_by_its_deadline_and_within_half_the_ack_wait_from_its_arrival() -> None:
    part = Part(triggered_unix_ns=100 * 10**9)
    assert part_deadline_s(part, 3000, arrived_s=100.5, ack_wait_s=30) == 103.0
    assert part_deadline_s(part, 60_000, arrived_s=100.5, ack_wait_s=30) == 115.5
    assert part_deadline_s(Part(), 3000, arrived_s=100.5, ack_wait_s=30) is None
