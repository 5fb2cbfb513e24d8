"""A job's outcome, written once and only by the worker that holds its lease: a
result (outputs, asset, metrics), a failure (final, or a retry), or a cancel; each
announced on the job's event channel for the API's long-polls."""

from __future__ import annotations

from rq import Queue
from rq.executions import Execution
from rq.job import Job
from rq.utils import now as utcnow
from rq.utils import utcformat

from contract.jobs import META_ERROR, META_RESULT, ErrorCode, JobError, JobEvent, JobResult
from contract.keys import JOB_EVENTS
from store.metrics import record_observation, record_outcome
from worker import rq_compat
from worker.executor import JobOutput
from worker.lease_types import RunningJob
from worker.state import WorkerState


class Outcomes(WorkerState):
    """Results, failures and cancels, fenced (``_holds``) and announced."""

    def _succeed(
        self, run: RunningJob, queue: Queue, output: JobOutput, run_ms: float, batch: int
    ) -> None:
        if not self._holds(run, queue, reclaim=True):
            return
        ids = [self.blobs.put(png) for png in output.images]
        if output.asset is not None and run.asset_id is None:
            asset = output.asset
            run.asset_id = self.asset_index.create(
                name=asset.name,
                model=run.payload.model,
                method=run.payload.method,
                blob=self.blobs.put(asset.data),
                params=asset.params,
                metrics=asset.metrics,
                owner=run.payload.owner,
                job=run.job.id,
            )["id"]
        enqueued = run.job.enqueued_at.timestamp() if run.job.enqueued_at else run.started
        queue_ms = 1e3 * (run.started - enqueued)
        result = JobResult(
            outputs=ids,
            asset=run.asset_id,
            metrics={
                **output.metrics,
                "queue_ms": round(queue_ms, 1),
                "run_ms": round(run_ms, 1),
                "batch_size": batch,
            },
        ).model_dump(mode="json")
        run.job.meta[META_RESULT] = result
        run.job.save_meta()
        run.done = True
        rq_compat.finalize_success(self, run.job, queue, run.execution, result)
        self._announce(run, JobEvent.SUCCEEDED)
        record_outcome(self.connection, "succeeded")
        record_observation(self.connection, "run_seconds", run_ms / 1e3)
        record_observation(self.connection, "queue_seconds", queue_ms / 1e3)

    def _fail(
        self, run: RunningJob, queue: Queue, code: ErrorCode, message: str, *, retry: bool
    ) -> None:
        # a retryable failure of a lost lease was already counted by whoever took it back
        if not self._holds(run, queue, reclaim=not retry):
            return
        run.done = True
        if not retry:
            run.job.retries_left = 0
        run.job.meta[META_ERROR] = JobError(code=code, message=message, retryable=retry).model_dump(
            mode="json"
        )
        run.job.save_meta()
        self.handle_execution_ended(run.job, queue, self.settings.lease_s)
        self.handle_job_failure(
            job=run.job,
            queue=queue,
            started_job_registry=queue.started_job_registry,
            exc_string=f"{code.value}: {message}",
            execution=run.execution,
        )
        self._announce(run, JobEvent.RETRYING if retry else JobEvent.FAILED)
        record_outcome(self.connection, "failed" if not retry else "failed_attempt")

    def _cancel(self, run: RunningJob, queue: Queue) -> None:
        if not self._holds(run, queue, reclaim=True):
            run.canceled = True
            return
        run.canceled = run.done = True
        error = JobError(code=ErrorCode.CANCELED, message="canceled while running", retryable=False)
        run.job.meta[META_ERROR] = error.model_dump(mode="json")
        run.job.save_meta()
        run.job.ended_at = None
        run.job.cancel()
        # RQ's cancel leaves ended_at empty; the job view shows when it ended
        self.connection.hset(run.job.key, "ended_at", utcformat(utcnow()))
        self._cleanup_execution(run.job, run.execution)
        self._announce(run, JobEvent.CANCELED)
        record_outcome(self.connection, "canceled")

    def _cleanup_execution(self, job: Job, execution: Execution) -> None:
        with self.connection.pipeline() as pipe:
            execution.delete(job=job, pipeline=pipe)
            pipe.execute()
        self.executions.pop(execution.id, None)

    # ------------------------------------------------------------------ outcomes
    def _announce(self, run: RunningJob, event: JobEvent) -> None:
        """Wake the API's long-polls waiting on this job."""
        self.connection.publish(JOB_EVENTS.format(id=run.job.id), event.value)
