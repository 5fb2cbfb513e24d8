"""When a shutting-down worker hands its running batch back (the rule; the e2e tests run it)."""

from __future__ import annotations

from worker.runner import outlasts_grace


def test_no_shutdown_never_hands_back() -> None:
    assert not outlasts_grace(1e6, 0.0, 0, 1, 10**6, deadline=None)


def test_a_batch_projected_to_end_in_time_runs_on() -> None:
    # steps 1 -> 5 in 4 s (1 s a step): 5 s to go at 105, deadline 111
    assert not outlasts_grace(105.0, 101.0, 1, 5, 10, deadline=111.0)


def test_a_batch_projected_to_end_late_is_handed_back() -> None:
    # the same pace, deadline 109
    assert outlasts_grace(105.0, 101.0, 1, 5, 10, deadline=109.0)


def test_the_pace_counts_from_the_first_report_not_from_step_zero() -> None:
    # a cached inversion: the first report is step 400 of 800; 10 steps took 1 s since
    # -> 39 s to go. Counted from step 0 the same batch would look nearly done.
    assert outlasts_grace(101.0, 100.0, 400, 410, 800, deadline=110.0)


def test_until_a_second_report_only_the_deadline_counts() -> None:
    assert not outlasts_grace(105.0, 105.0, 3, 3, 10, deadline=109.0)
    assert outlasts_grace(109.0, 105.0, 3, 3, 10, deadline=109.0)


def test_past_the_deadline_hands_back_and_a_finished_batch_does_not() -> None:
    assert outlasts_grace(120.0, 100.0, 1, 9, 10, deadline=110.0)
    assert not outlasts_grace(120.0, 100.0, 1, 10, 10, deadline=110.0)
