"""The worker's rules for leaving and for Redis outages (the e2e tests run the whole path)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from worker.resilience import retry_while_store_down
from worker.shutdown import outlasts_grace


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


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _flaky(failures: int) -> tuple[list[int], Callable[[], None]]:
    calls: list[int] = []

    def write() -> None:
        calls.append(1)
        if len(calls) <= failures:
            raise RedisConnectionError("down")

    return calls, write


def test_an_outcome_write_is_retried_while_redis_is_away() -> None:
    clock = _Clock()
    calls, write = _flaky(failures=4)
    retry_while_store_down("test", write, budget_s=30, sleep=clock.sleep, clock=clock)
    assert len(calls) == 5
    assert clock.now == 0.25 + 0.5 + 1 + 2  # backoff doubles


def test_an_outcome_write_gives_up_after_its_budget() -> None:
    clock = _Clock()
    calls, write = _flaky(failures=100)
    with pytest.raises(RedisConnectionError):
        retry_while_store_down("test", write, budget_s=20, sleep=clock.sleep, clock=clock)
    # sleeps 0.25, 0.5, 1, 2, 4, 5, 5 (17.75 s); one more 5 s would pass the budget
    assert clock.now == 17.75 and len(calls) == 8


def test_other_errors_are_not_retried() -> None:
    def write() -> None:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        retry_while_store_down("test", write, budget_s=30, sleep=lambda s: None)
