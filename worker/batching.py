"""Queue order and batching: which queued job runs next, and which run with it.

Every model's edits before any model's fits (RQ dequeues in this order), unless a
fit has waited ``fit_max_wait_s``. A dequeued job takes up to ``max_batch - 1`` more
queued jobs of its queue with the same batch key (its handler's batch fields,
equal) within ``max_wait_ms``; each claim is atomic among workers. At a fit's step
boundaries the worker runs queued edits within a budget (``worker.yielding``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from rq import Queue
from rq.job import Job

from contract.jobs import JobPayload
from contract.methods import METHODS
from store.metrics import record_observation
from worker import rq_compat
from worker.methods import HANDLERS
from worker.resilience import STORE_DOWN
from worker.state import WorkerState
from worker.yielding import YIELD_CHECK_S

log = logging.getLogger("editserve.worker")


def batch_key(method: str, params: dict[str, Any]) -> str | None:
    """Jobs of one model with equal keys run together as one batch; None: the job runs
    alone (a fit, or a method this worker does not know)."""
    handler, spec = HANDLERS.get(method), METHODS.get(method)
    if handler is None or spec is None or handler.batch_fields is None:
        return None
    defaults = spec.defaults()
    values = [f"{name}={params.get(name, defaults.get(name))}" for name in handler.batch_fields]
    return ":".join([method, *values])


def payload_of(job: Job) -> JobPayload:
    return JobPayload.model_validate(job.args[0])


class Batching(WorkerState):
    """The dequeue's queue order, gathering a batch, and edits run inside a fit."""

    # ------------------------------------------------------------------ ordering
    def dequeue_job_and_maintain_ttl(self, timeout: Any, max_idle_time: Any = None) -> Any:
        self._order_queues()
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def reorder_queues(self, reference_queue: Queue) -> None:
        """Ours is set before each dequeue (``_order_queues``), not after."""

    def _order_queues(self) -> None:
        """Edits first; fits first while the oldest queued fit has waited ``fit_max_wait_s``."""
        try:
            fits_first = any(
                self._waited_s(queue) >= self.settings.fit_max_wait_s for queue in self._fit_queues
            )
        except STORE_DOWN as exc:  # keep the last order; the dequeue waits for Redis
            self._store_down(exc)
            return
        first, then = (
            (self._fit_queues, self._edit_queues)
            if fits_first
            else (self._edit_queues, self._fit_queues)
        )
        rq_compat.set_queue_order(self, [*first, *then])

    def _waited_s(self, queue: Queue) -> float:
        """How long the job at the head of ``queue`` (the next RQ pops) has waited; 0 if none."""
        head = self.connection.lindex(queue.key, 0)
        job = queue.fetch_job(head.decode()) if head else None
        if job is None or job.enqueued_at is None:
            return 0.0
        return time.time() - float(job.enqueued_at.timestamp())

    def _gather(self, first: Job, queue: Queue) -> list[Job]:
        """Claim up to max_batch - 1 more queued jobs with the first one's batch key."""
        want = self.settings.max_batch - 1
        key = self._batch_key(first)
        if want <= 0 or key is None:  # a fit, or a method this worker does not know
            return []
        deadline = time.monotonic() + self.settings.max_wait_ms / 1000
        taken: list[Job] = []
        seen: set[str] = set()
        while len(taken) < want:
            for job_id in queue.get_job_ids(0, 4 * self.settings.max_batch):
                if job_id in seen or len(taken) >= want:
                    continue
                seen.add(job_id)
                job = queue.fetch_job(job_id)
                if job is None or self._batch_key(job) != key:
                    continue
                if self._claim(keys=[queue.key, queue.intermediate_queue_key], args=[job_id]):
                    taken.append(job)
            if len(taken) >= want or time.monotonic() >= deadline:
                break
            time.sleep(0.002)
        return taken

    @staticmethod
    def _batch_key(job: Job) -> str | None:
        payload = payload_of(job)
        return batch_key(payload.method, payload.params)

    def _yield_to_edits(self) -> None:
        """At a fit's step boundary: run the edits queued for any model this worker holds,
        batch by batch, within the yield budget; then the fit goes on (``yielding``)."""
        now = time.monotonic()
        if now - self._last_yield_check < YIELD_CHECK_S or self._stop.is_set():
            return
        self._last_yield_check = now
        while self._yield_budget.allows(now):
            try:
                taken = self.queue_class.dequeue_any(
                    self._edit_queues, None, connection=self.connection
                )
            except STORE_DOWN as exc:  # the fit computes on; the next boundary looks again
                self._store_down(exc)
                return
            if taken is None:
                return
            job, queue = taken
            log.info("fit yields to edit %s", job.id)
            try:
                self._run_batch([job, *self._gather(job, queue)], queue)
            except Exception:  # an edit's bookkeeping must not end the fit; an unstarted
                # claim goes back to its queue at the next maintenance pass
                log.exception("running edit %s inside a fit failed", job.id)
                return
            finally:
                began, now = self._last_yield_check, time.monotonic()
                self._yield_budget.spend(began, now)
                self._last_yield_check = now
            try:
                record_observation(self.connection, "fit_yield_seconds", now - began)
            except STORE_DOWN as exc:
                self._store_down(exc)
