"""Each RQ private API the worker uses (``worker.rq_compat``), held against the
installed RQ on a real Redis: an RQ release that moves one fails here by name."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker

from service.embedded import RedisProcess
from worker import rq_compat
from worker.shutdown import PUBSUB_POLL_S


@pytest.fixture
def redis(server: RedisProcess) -> Iterator[Redis]:
    conn = Redis.from_url(server.url)
    yield conn
    conn.close()


def _queue(redis: Redis) -> Queue:
    return Queue(f"compat-{uuid.uuid4().hex[:8]}", connection=redis, serializer=JSONSerializer)


class ShortPollWorker(SimpleWorker):  # type: ignore[misc]
    """RQ's worker with the editserve worker's pubsub poll: a plain SimpleWorker that
    loses RQ's unsubscribe race at the end of ``work`` waits 60 s (seen here once)."""

    def subscribe(self) -> None:
        rq_compat.subscribe_polling(self, PUBSUB_POLL_S)


def _worker(
    redis: Redis, *queues: Queue, cls: type[SimpleWorker] = ShortPollWorker
) -> SimpleWorker:
    return cls(list(queues), connection=redis, serializer=JSONSerializer,
               name=f"compat-{uuid.uuid4().hex[:8]}")  # fmt: skip


def test_the_installed_rq_has_every_private_the_worker_uses() -> None:
    rq_compat.check()


def test_set_queue_order_is_the_order_the_dequeue_reads(redis: Redis) -> None:
    first, second = _queue(redis), _queue(redis)
    first.enqueue("builtins.len", "a")
    wanted = second.enqueue("builtins.len", "b")
    worker = _worker(redis, first, second)
    worker.register_birth()
    try:
        rq_compat.set_queue_order(worker, [second, first])
        job, queue = worker.dequeue_job_and_maintain_ttl(1)
    finally:
        worker.register_death()
    assert (job.id, queue.name) == (wanted.id, second.name)


def test_a_stop_after_the_job_ends_the_loop_before_its_next_dequeue(redis: Redis) -> None:
    queue = _queue(redis)
    job = queue.enqueue("builtins.len", "abc")
    worker = _worker(redis, queue)
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        rq_compat.request_stop_after_job(worker)
        worker.work(burst=True)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    assert job.get_status(refresh=True) == JobStatus.QUEUED  # never taken


def test_rqs_stop_handler_calls_the_shutdown_hook(redis: Redis) -> None:
    calls: list[str] = []

    class Hooked(ShortPollWorker):
        pass

    setattr(Hooked, rq_compat.SHUTDOWN_HOOK, lambda self: calls.append("hook"))
    worker = _worker(redis, _queue(redis), cls=Hooked)
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        worker.request_stop(signal.SIGTERM, None)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    assert calls == ["hook"]


def test_finalize_success_finishes_the_job_with_its_result(redis: Redis) -> None:
    queue = _queue(redis)
    queue.enqueue("builtins.len", "abc")
    worker = _worker(redis, queue)
    worker.register_birth()
    try:
        job, _ = worker.dequeue_job_and_maintain_ttl(1)
        execution = worker.prepare_execution(job)
        worker.prepare_job_execution(job)
        rq_compat.finalize_success(worker, job, queue, execution, {"outputs": ["x"]})
    finally:
        worker.register_death()
    stored = Job.fetch(job.id, connection=redis, serializer=JSONSerializer)
    assert stored.get_status() == JobStatus.FINISHED
    assert stored.return_value() == {"outputs": ["x"]}
    assert job.id not in queue.started_job_registry.get_job_ids(cleanup=False)


def test_enqueue_at_front_puts_the_job_at_the_head(redis: Redis) -> None:
    queue = _queue(redis)
    queue.enqueue("builtins.len", "a")
    queue.enqueue("builtins.len", "b")
    job = queue.create_job("builtins.len", args=("c",))
    job.save()
    with redis.pipeline() as pipe:
        rq_compat.enqueue_at_front(queue, job, pipe)
        pipe.execute()
    assert queue.get_job_ids()[0] == job.id and queue.count == 3
    assert job.get_status(refresh=True) == JobStatus.QUEUED
