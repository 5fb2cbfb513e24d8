"""Redis unreachable (a restart, a failover): the worker waits for it and loses no work.

A running batch computes on; its progress and cancel checks are skipped until Redis
answers, and its outcome is written with retries for up to ``store_retry_s``. RQ's
loop quits on a Redis error outside its dequeue (which retries by itself); the
bookkeeping writes overridden here wait for the next round instead, so an idle
worker outlives a Redis restart.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from worker.state import WorkerState

log = logging.getLogger("editserve.worker")
STORE_DOWN = (RedisConnectionError, RedisTimeoutError)


def retry_while_store_down(
    what: str, write: Any, budget_s: float, sleep: Any = time.sleep, clock: Any = time.monotonic
) -> None:
    """``write()``, retried with backoff while Redis is unreachable, for up to ``budget_s``."""
    deadline = clock() + budget_s
    delay = 0.25
    while True:
        try:
            write()
            return
        except STORE_DOWN as exc:
            if clock() + delay > deadline:
                log.error("Redis unreachable while %s: gave up after %.0f s", what, budget_s)
                raise
            log.warning("Redis unreachable while %s (%s); retrying in %.2f s", what, exc, delay)
            sleep(delay)
            delay = min(2 * delay, 5.0)


class StoreDownTolerant(WorkerState):
    """The worker's RQ bookkeeping, tolerant of a Redis outage."""

    # RQ's loop quits on a Redis error outside its dequeue (which retries by itself);
    # these bookkeeping writes wait for the next round instead, so an idle worker
    # outlives a Redis restart
    def set_state(self, state: str, pipeline: Any = None) -> None:
        try:
            super().set_state(state, pipeline=pipeline)
        except STORE_DOWN as exc:
            self._store_down(exc)

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        try:
            super().heartbeat(timeout, pipeline=pipeline)
        except STORE_DOWN as exc:
            self._store_down(exc)

    def check_for_suspension(self, burst: bool) -> None:
        try:
            super().check_for_suspension(burst)
        except STORE_DOWN as exc:
            self._store_down(exc)

    def _store_down(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._store_down_logged >= 5:
            self._store_down_logged = now
            log.warning("Redis unreachable (%s); waiting for it (a running batch computes on)", exc)

    def _retrying(self, what: str, write: Any) -> None:
        retry_while_store_down(what, write, self.settings.store_retry_s)
