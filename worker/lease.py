"""Leases and fencing: a running job is this worker's only while its lease is fresh.

A heartbeat thread renews every running job's lease (RQ's started registry) every
``heartbeat_s``. A killed worker stops beating; within ``lease_s`` its jobs expire and
the next maintenance pass of any live worker re-queues them while attempts remain.
Before it writes an outcome, a worker checks that it still holds the lease
(``fence``): one cut off past its lease drops its run if another worker took the job
over, or takes the job back out of its queue if nobody has picked it up.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from redis import Redis
from rq import Queue
from rq.executions import Execution
from rq.job import Job

from contract.keys import HEARTBEAT_KEY
from store.metrics import record_outcome
from worker.lease_types import RunningJob
from worker.resilience import STORE_DOWN
from worker.state import WorkerState

log = logging.getLogger("editserve.worker")

# Fencing: whether this worker still holds a job's lease when it writes the job's
# outcome. A worker frozen for longer than the lease (a Redis outage, a VM pause,
# SIGSTOP) finds on waking that another worker's maintenance took the job back:
#   its execution is still in the started registry -> still ours (lease renewed, so
#     no cleanup can take it between this check and the write);                1
#   else, if ``reclaim`` and the job waits in its queue (re-queued, not yet picked):
#     take it out and back into the registry: our finished run stands, none repeats; 2
#   else (another worker runs it, or it ended): the outcome is not ours to write. 0
_FENCE = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  return 1
end
if ARGV[4] == '1' and redis.call('LREM', KEYS[2], 1, ARGV[2]) == 1 then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  return 2
end
return 0
"""


FENCE_OURS, FENCE_RECLAIMED, FENCE_LOST = 1, 2, 0


def fence_script(connection: Redis) -> Any:
    """``_FENCE`` registered on ``connection`` (once per worker), for ``fence``."""
    return connection.register_script(_FENCE)


def fence(
    script: Any, job: Job, execution: Execution, queue: Queue, lease_s: float, reclaim: bool
) -> int:
    """One of ``FENCE_OURS``, ``FENCE_RECLAIMED``, ``FENCE_LOST`` (see ``_FENCE``)."""
    keys = [queue.started_job_registry.key, queue.key]
    args = [execution.composite_key, job.id, time.time() + lease_s, "1" if reclaim else "0"]
    return int(script(keys=keys, args=args))


class LeaseKeeping(WorkerState):
    """The heartbeat thread that renews leases, and the fence before each outcome."""

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """A job's lease: renewed every ``heartbeat_s`` by the heartbeat thread."""
        return self.settings.lease_s

    def start_heartbeats(self) -> threading.Thread:
        thread = threading.Thread(target=self._beat_forever, name="heartbeat", daemon=True)
        thread.start()
        return thread

    def _beat_forever(self) -> None:
        while not self._stop_beat.wait(self.settings.heartbeat_s):
            try:
                self.connection.hset(HEARTBEAT_KEY, self.name, time.time())
                # under the lock: a job handed back or ended meanwhile must not get its
                # lease renewed after its execution was deleted
                with self._lock:
                    live = [run for run in self._running.values() if not run.done]
                    for run in live:
                        self.maintain_heartbeats(run.job, run.execution)
                    self._notice_lost_leases(live)
            except STORE_DOWN as exc:  # the next beat retries
                self._store_down(exc)
            except Exception:  # nothing must kill the beat; the next one retries
                log.exception("heartbeat failed")

    def _notice_lost_leases(self, runs: list[RunningJob]) -> None:
        """Runs whose lease another worker's maintenance took (this worker was cut off
        past it) and whose job another worker now runs, or that ended: stop spending
        compute on them (the batch stops if none is left). A job re-queued but not yet
        picked up stays: its run can still take it back when it ends (``fence``)."""
        if not runs:
            return
        with self.connection.pipeline() as pipe:
            for run in runs:
                pipe.zscore(run.job.started_job_registry.key, run.execution.composite_key)
                pipe.hget(run.job.key, "status")
            replies = pipe.execute()
        for i, run in enumerate(runs):
            score, status = replies[2 * i], replies[2 * i + 1]
            if run.fenced:  # the main thread is writing its outcome (and may have ended it)
                continue
            if score is not None or status in (b"queued", b"deferred", b"scheduled"):
                continue
            run.lost = run.done = True
            log.warning(
                "job %s: this worker lost its lease (cut off for more than %s s) and the "
                "job is %s; this run stops and its outcome is dropped",
                run.job.id,
                self.settings.lease_s,
                "run by another worker" if status == b"started" else "over",
            )
            record_outcome(self.connection, "lease_lost")

    def _holds(self, run: RunningJob, queue: Queue, *, reclaim: bool) -> bool:
        """Whether this worker may write the job's outcome (see ``fence``); checked once
        per outcome, so a write retried through a Redis blip is not refused by itself."""
        if run.fenced:
            return True
        if run.lost:  # the heartbeat found it run elsewhere (and counted it)
            return False
        verdict = fence(self._fence, run.job, run.execution, queue, self.settings.lease_s, reclaim)
        if verdict == FENCE_LOST:
            with self._lock:
                run.done = True
            log.warning(
                "job %s: this worker lost its lease (paused or cut off for more than %s s) "
                "and the job was taken over or has ended; this run's outcome is dropped",
                run.job.id,
                self.settings.lease_s,
            )
            record_outcome(self.connection, "lease_lost")
            return False
        if verdict == FENCE_RECLAIMED:
            log.warning(
                "job %s: this worker lost its lease, but the job was still queued: "
                "taken back, this run's outcome stands",
                run.job.id,
            )
            record_outcome(self.connection, "reclaimed")
        run.fenced = True
        return True
