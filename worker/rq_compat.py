"""Every use of an RQ private API, in one place (rq is pinned to 3.0.x in pyproject).

The worker is an RQ ``SimpleWorker`` that batches, fences and hands jobs back, which
RQ has no public hooks for. What it touches beyond RQ's public API is here, each with
a test in ``tests/worker/test_rq_compat.py`` that fails on an RQ release that moved it:

- ``Worker._ordered_queues``: the order the next dequeue reads the queues in;
- ``Worker._stop_requested``: the loop's "stop after this job" flag;
- ``Worker._shutdown``: what RQ's stop handler calls (overridden, see ``SHUTDOWN_HOOK``);
- ``Worker._finalize_success``: RQ's bookkeeping of a job that returned;
- ``Queue._enqueue_job``: enqueue without RQ's dependency checks, at the front;
- ``Worker._pubsub_exception_handler``: what RQ's pubsub listener does with an error
  (the worker starts that listener itself, with a shorter poll: ``subscribe_polling``).
"""

from __future__ import annotations

from typing import Any

from rq import Queue
from rq.executions import Execution
from rq.job import Job
from rq.worker import SimpleWorker

# the name of the worker method RQ's signal handler calls on the first stop signal
SHUTDOWN_HOOK = "_shutdown"


def set_queue_order(worker: SimpleWorker, queues: list[Queue]) -> None:
    """The order the worker's next dequeue reads ``queues`` in."""
    worker._ordered_queues = list(queues)


def request_stop_after_job(worker: SimpleWorker) -> None:
    """The loop stops before its next dequeue (a running batch ends first)."""
    worker._stop_requested = True


def finalize_success(
    worker: SimpleWorker, job: Job, queue: Queue, execution: Execution, result: Any
) -> None:
    """RQ's own end of a job that returned ``result``: finished, result stored, registries."""
    worker._finalize_success(job, queue, execution, result)


def enqueue_at_front(queue: Queue, job: Job, pipeline: Any) -> None:
    """Put ``job`` back at the head of ``queue`` (in ``pipeline``), as RQ enqueues."""
    queue._enqueue_job(job, pipeline=pipeline, at_front=True)


def pubsub_exception_handler(worker: SimpleWorker) -> Any:
    """RQ's handler of an error in the worker's pubsub listener thread."""
    return worker._pubsub_exception_handler


def subscribe_polling(worker: SimpleWorker, poll_s: float) -> None:
    """Start RQ's pubsub listener (its ``send_command`` channel) as ``Worker.subscribe``
    does, but polling every ``poll_s`` instead of RQ 3.0's 60 s.

    At exit RQ unsubscribes, then stops the listener thread and joins it; redis-py 8
    joins with no timeout. When the thread read the unsubscribe reply before the stop
    flag was cleared, it went back to wait for a subscription for its full poll, so a
    stopped worker hung up to 60 s. With a short poll the loser of that race waits one
    poll."""
    worker.pubsub = worker.connection.pubsub()
    worker.pubsub.subscribe(**{worker.pubsub_channel_name: worker.handle_payload})
    worker.pubsub_thread = worker.pubsub.run_in_thread(
        sleep_time=poll_s, daemon=True, exception_handler=pubsub_exception_handler(worker)
    )


def check() -> None:
    """Raise RuntimeError naming what the installed RQ lacks (the worker checks at start)."""
    missing = [
        name
        for owner, name in (
            (SimpleWorker, "_finalize_success"),
            (SimpleWorker, SHUTDOWN_HOOK),
            (SimpleWorker, "_pubsub_exception_handler"),
            (Queue, "_enqueue_job"),
        )
        if not callable(getattr(owner, name, None))
    ]
    if missing:
        raise RuntimeError(f"this RQ version lacks {', '.join(missing)}; editserve needs rq 3.0")
