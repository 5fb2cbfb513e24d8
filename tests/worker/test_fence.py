"""Fencing a job's outcome against a real Redis and RQ's own lease recovery.

A worker frozen for longer than its lease (a Redis outage, a VM pause, SIGSTOP)
may wake to find that another worker's maintenance took its job back. ``fence``
decides whether the outcome it computed may still be written.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from redis import Redis
from rq import Queue, Retry
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from service.embedded import RedisProcess
from worker.lease import FENCE_LOST, FENCE_OURS, FENCE_RECLAIMED, fence, fence_script

LEASE_S = 4


@pytest.fixture
def queue(server: RedisProcess) -> Iterator[Queue]:
    redis = Redis.from_url(server.url)
    yield Queue(f"fence-{uuid.uuid4().hex[:8]}", connection=redis, serializer=JSONSerializer)
    redis.close()


def _start(queue: Queue, job: Job, worker: str) -> Execution:
    """What a worker's dequeue does: out of the queue, STARTED, an execution with a lease."""
    assert queue.connection.lrem(queue.key, 1, job.id) == 1
    with queue.connection.pipeline() as pipe:
        job.set_status(JobStatus.STARTED, pipeline=pipe)
        execution = Execution.create(job, ttl=LEASE_S, pipeline=pipe, worker_name=worker)
        pipe.execute()
    return execution


def _lease_runs_out(queue: Queue) -> None:
    """Another worker's maintenance, a lease later: RQ re-queues the abandoned job."""
    queue.started_job_registry.cleanup(timestamp=time.time() + LEASE_S + 1)


def _fence(job: Job, execution: Execution, queue: Queue, *, reclaim: bool) -> int:
    return fence(fence_script(queue.connection), job, execution, queue, LEASE_S, reclaim)


def _in_registry(queue: Queue, execution: Execution) -> bool:
    return (
        queue.connection.zscore(queue.started_job_registry.key, execution.composite_key) is not None
    )


def test_a_worker_holding_its_lease_writes_and_the_lease_is_renewed(queue: Queue) -> None:
    job = queue.enqueue("builtins.print", retry=Retry(max=2))
    mine = _start(queue, job, "w1")
    key = queue.started_job_registry.key
    queue.connection.zadd(key, {mine.composite_key: time.time() + 0.5})  # nearly expired
    assert _fence(job, mine, queue, reclaim=True) == FENCE_OURS
    # renewed: a cleanup now cannot take the job between the check and the write
    assert queue.connection.zscore(key, mine.composite_key) > time.time() + LEASE_S - 1
    queue.started_job_registry.cleanup()
    assert Job.fetch(job.id, connection=queue.connection).get_status() == JobStatus.STARTED


def test_a_lost_lease_on_a_job_still_queued_is_taken_back(queue: Queue) -> None:
    job = queue.enqueue("builtins.print", retry=Retry(max=2))
    mine = _start(queue, job, "w1")
    _lease_runs_out(queue)
    assert queue.get_job_ids() == [job.id]  # re-queued, an attempt spent
    assert not _in_registry(queue, mine)
    # a retryable failure or a hand-back does not take it back: the queue already has it
    assert _fence(job, mine, queue, reclaim=False) == FENCE_LOST
    assert queue.get_job_ids() == [job.id]
    # a finished run does: the job leaves the queue, so it does not run a second time
    assert _fence(job, mine, queue, reclaim=True) == FENCE_RECLAIMED
    assert queue.get_job_ids() == []
    assert _in_registry(queue, mine)


def test_a_lost_lease_on_a_job_another_worker_runs_is_not_written(queue: Queue) -> None:
    job = queue.enqueue("builtins.print", retry=Retry(max=2))
    mine = _start(queue, job, "w1")
    _lease_runs_out(queue)
    theirs = _start(queue, job, "w2")
    assert _fence(job, mine, queue, reclaim=True) == FENCE_LOST
    assert _in_registry(queue, theirs) and not _in_registry(queue, mine)
    assert queue.get_job_ids() == []


def test_a_lost_lease_on_a_job_that_failed_for_good_is_not_written(queue: Queue) -> None:
    job = queue.enqueue("builtins.print")  # no retries: the cleanup fails it
    mine = _start(queue, job, "w1")
    _lease_runs_out(queue)
    assert Job.fetch(job.id, connection=queue.connection).get_status() == JobStatus.FAILED
    assert _fence(job, mine, queue, reclaim=True) == FENCE_LOST
