"""Shutdown (SIGTERM or Ctrl-C, as ``docker stop`` and a rolling deploy send).

The worker takes no new job. A running batch that will end within
``shutdown_grace_s`` (projected from its progress so far) runs to the end; one that
will not is handed back at its next step: its jobs go to the front of their queue
with no attempt spent, and another worker starts them at once instead of after a
lease. A second signal hands the batch back at the next step; a third exits at once,
as RQ does.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from rq import Queue

from contract.jobs import META_PROGRESS
from contract.keys import HEARTBEAT_KEY, MODELS_KEY
from store.metrics import record_outcome
from worker import rq_compat
from worker.lease_types import RunningJob
from worker.state import WorkerState

log = logging.getLogger("editserve.worker")

# how long the worker's pubsub listener waits for a message before it looks at its
# stop flag again (RQ 3.0 passes 60 s; see Shutdown.subscribe)
PUBSUB_POLL_S = 0.5


class BatchCanceled(Exception):
    """Every job of the batch was canceled or taken over by another worker: stop computing."""


class BatchHandedBack(Exception):
    """The worker is shutting down and this batch would not end in time: re-queue it."""


def outlasts_grace(
    now: float, first_at: float, first_step: int, step: int, total: int, deadline: float | None
) -> bool:
    """Whether a batch should be handed back: a shutdown is due and it would end after it.

    The end is projected from the pace since the batch's first progress report
    (``first_step`` at ``first_at``), not since step 0: a cached inversion makes the
    progress jump at once. Until a second report the pace is unknown and only the
    deadline itself counts.
    """
    if deadline is None or (total > 0 and step >= total):
        return False  # no shutdown, or the batch has computed its last step
    if now >= deadline:
        return True
    if step <= first_step:
        return False
    pace = (now - first_at) / (step - first_step)
    return now + pace * (total - step) > deadline


class Shutdown(WorkerState):
    """Stop signals, and handing a batch back to the queue."""

    # ------------------------------------------------------------------ shutdown
    def request_stop(self, signum: int, frame: Any) -> None:
        """First SIGTERM/SIGINT: no new jobs; the running batch gets ``shutdown_grace_s``."""
        self._signals = 1
        self._first_signal = time.monotonic()
        self._shutdown_deadline = self._first_signal + self.settings.shutdown_grace_s
        log.info(
            "shutdown requested: a running batch that ends within %.1f s finishes, "
            "a longer one is handed back to the queue",
            self.settings.shutdown_grace_s,
        )
        super().request_stop(signum, frame)

    def _shutdown(self) -> None:
        """The first signal's effect, in the signal handler: stop after the running batch,
        or, idle, at the dequeue's next poll (within ``DOORBELL_POLL_S``).

        RQ raises ``StopRequested`` from the handler when idle. That lands wherever the
        main thread is, such as inside a maintenance pass whose ``except Exception``
        (recovery and retention must not end a worker) swallowed it: the worker then
        ran on with its shutdown deadline passed and handed every job back at once,
        forever. Here the handler only sets flags.
        """
        rq_compat.request_stop_after_job(self)
        self._stop.set()

    def request_force_stop(self, signum: int, frame: Any) -> None:
        """Second signal: hand the running batch back at its next step; third: exit now."""
        if time.monotonic() - self._first_signal < 1.0:
            return  # the same stop delivered twice (Ctrl-C to the group, then the parent)
        self._signals += 1
        # no lock here: a signal handler runs in the main thread, which may hold it
        if self._running and self._signals == 2:
            log.warning("second signal: handing the running batch back at its next step")
            self._shutdown_deadline = time.monotonic()
            return
        super().request_force_stop(signum, frame)

    def subscribe(self) -> None:
        """RQ's pubsub listener, polling every ``PUBSUB_POLL_S`` instead of RQ's 60 s
        (``rq_compat.subscribe_polling``: a stopped worker hung up to 60 s after handing
        its batch back, until a second signal; the chaos test saw one pass its 30 s
        wait)."""
        rq_compat.subscribe_polling(self, PUBSUB_POLL_S)

    def teardown(self) -> None:
        self._stop_beat.set()
        try:
            self.connection.hdel(HEARTBEAT_KEY, self.name)
            self.connection.hdel(MODELS_KEY, self.name)
        finally:
            super().teardown()

    def _hand_back(self, run: RunningJob, queue: Queue) -> None:
        """Re-queue a job at the front of its queue, no attempt spent: this worker is leaving."""
        if not self._holds(run, queue, reclaim=False):
            return  # already back in the queue or running elsewhere
        with self._lock:
            run.done = True  # the heartbeat thread renews its lease no more
        job = run.job
        job.meta.pop(META_PROGRESS, None)
        job.meta["handed_back"] = int(job.meta.get("handed_back", 0)) + 1
        job.started_at = None
        job.worker_name = None
        with self.connection.pipeline() as pipe:
            run.execution.delete(job=job, pipeline=pipe)
            rq_compat.enqueue_at_front(queue, job, pipe)
            pipe.execute()
        record_outcome(self.connection, "handed_back")
