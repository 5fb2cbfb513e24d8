"""A stop signal ends an idle worker wherever the main thread is when it lands.

RQ's own handler raises ``StopRequested`` into the interrupted code. A signal that
landed inside a maintenance pass was swallowed by that pass's ``except Exception``;
the worker ran on with its shutdown deadline in the past and handed every job it took
back to the queue at once, in a loop (CI saw one do so for minutes).
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

import worker.runner as runner
from service.embedded import RedisProcess
from worker.boot import build_worker
from worker.dequeue import ClaimingQueue, claiming_queue
from worker.runner import BatchWorker
from worker.settings import WorkerSettings
from worker.shutdown import PUBSUB_POLL_S


@pytest.fixture
def worker(server: RedisProcess, pixel_dir: Path, tmp_path: Path) -> Iterator[BatchWorker]:
    settings = WorkerSettings(
        redis_url=server.url,
        blob_dir=tmp_path / "blobs",
        models=f"tiny-{uuid.uuid4().hex[:8]}={pixel_dir}",
        worker_name=f"stop-{uuid.uuid4().hex[:8]}",
        device="cpu",
        dtype="float32",
        maintenance_s=1,
        gc_interval_s=1,
    )
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    built = build_worker(settings)
    try:
        yield built
    finally:  # RQ's work() installs its handlers in this process
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        built.connection.close()


def test_a_stop_during_a_maintenance_pass_ends_the_idle_worker(
    worker: BatchWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    passes: list[int] = []

    def retention_pass(*args: Any, **kwargs: Any) -> None:  # the signal lands in here
        passes.append(1)
        if len(passes) == 1:
            worker.request_stop(signal.SIGTERM, None)

    monkeypatch.setattr(runner, "maybe_collect", retention_pass)
    # should the stop be lost, the worker would idle on forever: a second signal 20 s
    # later makes RQ exit cold (SystemExit), which fails the test instead of hanging it
    watchdog = threading.Timer(20, signal.raise_signal, (signal.SIGINT,))
    watchdog.start()
    try:
        worked = worker.work()
    finally:
        watchdog.cancel()
    assert worked is False and len(passes) == 1
    assert worker._stop_requested


def test_a_bound_queue_takes_nothing_once_its_stop_is_set(server: RedisProcess) -> None:
    redis = Redis.from_url(server.url)
    queue = Queue(f"stop-{uuid.uuid4().hex[:8]}", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue("builtins.print", "never run")
    stop = threading.Event()
    bound = claiming_queue(stop)
    assert ClaimingQueue.stop is None and bound.stop is stop
    stop.set()
    assert bound.dequeue_any([queue], timeout=5, connection=redis) is None
    assert queue.job_ids == [job.id]  # still queued, not claimed
    stop.clear()
    taken = bound.dequeue_any([queue], timeout=5, connection=redis)
    assert taken is not None and taken[0].id == job.id
    assert redis.lrange(queue.intermediate_queue_key, 0, -1) == [job.id.encode()]
    redis.close()


def test_a_stopping_worker_leaves_its_pubsub_channel_at_once_when_the_listener_wins_the_race(
    worker: BatchWorker,
) -> None:
    """At exit RQ unsubscribes, then stops and joins the listener thread (redis-py 8
    joins with no timeout). Forced here, the race the chaos test lost once: the
    listener reads the unsubscribe reply before its stop flag is cleared, and waits
    for a subscription for one poll. With RQ's 60 s poll the exit hung that long."""
    worker.subscribe()
    listener = worker.pubsub_thread
    worker.pubsub.unsubscribe()
    deadline = time.monotonic() + 10
    while worker.pubsub.subscribed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not worker.pubsub.subscribed  # the listener read the reply; its flag is still set
    assert listener.is_alive()
    started = time.monotonic()
    leaving = threading.Thread(target=worker.unsubscribe, daemon=True)
    leaving.start()
    leaving.join(timeout=10 * PUBSUB_POLL_S)
    took = time.monotonic() - started
    assert not leaving.is_alive() and not listener.is_alive(), f"still leaving after {took:.1f} s"
