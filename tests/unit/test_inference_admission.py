"""Admission by deadline (services/inference/admission.py), called directly: the frames ahead at the model's recent
pace, plus the path after the model, must fit before the part's deadline."""

from __future__ import annotations

from lineguard.services.inference.admission import AFTER_MODEL_S, ModelPace, can_finish, overload_text


def test_a_frame_is_admitted_while_the_frames_ahead_of_it_fit_before_its_deadline() -> None:
    pace = ModelPace(per_frame_s=0.1)
    deadline = 10.0 + 1.0  # 1 s left at now = 10
    fits = (1.0 - AFTER_MODEL_S) / 0.1  # frames (itself included) that fit
    assert can_finish(10.0, deadline, ahead=int(fits) - 1, pace=pace)
    assert not can_finish(10.0, deadline, ahead=int(fits), pace=pace)
    assert not can_finish(10.0, 10.05, ahead=0, pace=pace)  # not even its own run fits


def test_before_the_model_ran_every_frame_is_admitted_and_the_pace_follows_the_runs() -> None:
    pace = ModelPace()
    assert can_finish(0.0, 0.01, ahead=100, pace=pace)
    pace.observe(0.4, 4)  # a batch of 4 in 0.4 s
    assert pace.per_frame_s == 0.1
    for _ in range(30):
        pace.observe(0.3, 1)  # the model slowed down: the estimate follows within a few batches
    assert 0.29 < (pace.per_frame_s or 0) <= 0.3
    pace.observe(1.0, 0)  # nothing ran: nothing learnt
    assert 0.29 < (pace.per_frame_s or 0) <= 0.3
    assert overload_text(7, pace, 0.5).startswith("OVERLOAD: 7 frames ahead at 300 ms each")
