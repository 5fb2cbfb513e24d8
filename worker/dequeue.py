"""Taking jobs so that none is ever only in a worker's memory.

RQ 3's ``Queue.dequeue_any`` moves a job into the queue's recoverable intermediate
list (``BLMOVE``) only when a worker listens on a single queue. With more than one
(ours: edits and fits of every model) it pops with ``BLPOP``: the job then lives in
the worker's memory alone until it starts, and a worker killed in that window (or
stopped while blocked, since Redis pops for a blocked client) strands it ``queued``
forever, in no queue and no registry. So:

- ``ClaimingQueue.dequeue_any`` takes the first job of the first non-empty queue, in
  order, with one script that ``LMOVE``s it into that queue's intermediate list. A
  job is always in a queue, an intermediate list or the started registry.
- While every queue is empty it waits on the queues' doorbells (``BLPOP`` on lists
  that carry no job, only a wake-up the API rings at each submit), for at most
  ``DOORBELL_POLL_S`` at a time, so a job re-queued without a ring (a retry, a
  hand-back, a recovery) waits at most that long.
- ``start_claimed`` moves a claimed job from the intermediate list into the started
  registry; if a recovery gave it back to its queue meanwhile (this worker was cut
  off past its lease between the claim and the start), the worker lets it go.
- ``recover_claims`` (every maintenance pass) gives back to the front of its queue,
  with no attempt spent, each job that has sat in an intermediate list unstarted for
  a lease: its worker died between the claim and the start.
- ``recover_stranded`` finds any job whose status says ``queued`` while no queue,
  intermediate list or started registry holds it, and queues it again. With the two
  rules above this should never find one; it is the backstop, counted in /metrics
  (``editserve_jobs_total{status="stranded_requeued"}``) and logged.
- A stop ends the wait between polls: ``claiming_queue(stop)`` binds the worker's stop
  event, and once it is set ``dequeue_any`` takes nothing more. The signal handler only
  sets it; it never raises into whatever the main thread is doing (see
  ``BatchWorker._shutdown``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, ClassVar

from redis import Redis
from rq import Queue
from rq.exceptions import DequeueTimeout
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job

from contract.keys import OPEN_JOBS_KEY, doorbell_key
from store.metrics import record_outcome

log = logging.getLogger("editserve.worker")
DOORBELL_POLL_S = 0.25

# KEYS: queue_1, intermediate_1, queue_2, intermediate_2, ... in priority order.
# Returns {i, job_id} for the first non-empty queue (1-based pair index), or nil.
_TAKE = """
for i = 1, #KEYS, 2 do
  local id = redis.call('LMOVE', KEYS[i], KEYS[i + 1], 'LEFT', 'RIGHT')
  if id then return {(i + 1) / 2, id} end
end
return nil
"""

# KEYS: intermediate, queue. ARGV: job id. Give an unstarted claim back to the front
# of its queue; 0 if it is no longer in the intermediate list (it started, or it went).
_GIVE_BACK = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[2], ARGV[1])
  return 1
end
return 0
"""

# KEYS: job hash, queue, intermediate, started registry. ARGV: job id.
# Queue the job again if its status is queued and nothing holds it; 1 if it did.
_REQUEUE_STRANDED = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
if redis.call('LPOS', KEYS[2], ARGV[1]) then return 0 end
if redis.call('LPOS', KEYS[3], ARGV[1]) then return 0 end
local prefix = ARGV[1] .. ':'
for _, member in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  if member == ARGV[1] or string.sub(member, 1, #prefix) == prefix then return 0 end
end
redis.call('LPUSH', KEYS[2], ARGV[1])
return 1
"""


@lru_cache(maxsize=16)
def _script(connection: Redis, source: str) -> Any:
    """``source`` registered on ``connection`` once (the dequeue polls it several times a
    second; registering hashes the script each time)."""
    return connection.register_script(source)


class ClaimingQueue(Queue):  # type: ignore[misc]  # rq's classes are Any to mypy
    """An RQ queue whose ``dequeue_any`` parks every job it takes in an intermediate list."""

    stop: ClassVar[threading.Event | None] = None  # set: take nothing more (a bound subclass)

    @classmethod
    def dequeue_any(  # RQ's signature; called by the worker's dequeue loop
        cls,
        queues: Iterable[Queue],
        timeout: int | None,
        connection: Redis,
        job_class: Any = None,
        serializer: Any = None,
        death_penalty_class: Any = None,
    ) -> tuple[Job, Queue] | None:
        queues = list(queues)
        keys = [key for q in queues for key in (q.key, q.intermediate_queue_key)]
        take = _script(connection, _TAKE)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if cls.stop is not None and cls.stop.is_set():
                return None  # RQ's loop ends on None: the worker stops
            taken = take(keys=keys)
            if taken is not None:
                queue = queues[int(taken[0]) - 1]
                job_id = taken[1].decode() if isinstance(taken[1], bytes) else str(taken[1])
                job = queue.fetch_job(job_id)
                if job is None:  # deleted while queued: nothing to run
                    connection.lrem(queue.intermediate_queue_key, 1, job_id)
                    continue
                return job, queue
            if deadline is None:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise DequeueTimeout(timeout, keys[::2])
            connection.blpop([doorbell_key(q.key) for q in queues], min(left, DOORBELL_POLL_S))


def claiming_queue(stop: threading.Event) -> type[ClaimingQueue]:
    """``ClaimingQueue`` bound to one worker's stop event (RQ calls ``dequeue_any`` on
    the class, so the event rides on a subclass)."""
    return type("StoppableClaimingQueue", (ClaimingQueue,), {"stop": stop})


def start_claimed(connection: Redis, job: Job, queue: Queue) -> bool:
    """Out of the intermediate list (the caller has put the job's execution in the
    started registry first); False if a recovery gave it back to its queue meanwhile."""
    return bool(connection.lrem(queue.intermediate_queue_key, 1, job.id))


def _seen_key(queue: Queue) -> str:
    return f"{queue.intermediate_queue_key}:seen"


def recover_claims(connection: Redis, queues: Iterable[Queue], lease_s: float) -> list[str]:
    """Give back each job unstarted in an intermediate list for ``lease_s``; their ids."""
    give_back = _script(connection, _GIVE_BACK)
    now = time.time()
    recovered: list[str] = []
    for queue in queues:
        seen_key = _seen_key(queue)
        intermediate = IntermediateQueue(queue.key, connection)
        claimed = intermediate.get_job_ids()
        started = set(queue.started_job_registry.get_job_ids(cleanup=False))
        seen = {_text(k): float(v) for k, v in connection.hgetall(seen_key).items()}
        gone = [job_id for job_id in seen if job_id not in claimed]
        if gone:
            connection.hdel(seen_key, *gone)
        for job_id in claimed:
            if job_id in started:
                continue
            first = seen.get(job_id)
            if first is None:
                connection.hsetnx(seen_key, job_id, now)
                continue
            if now - first < lease_s:
                continue
            if give_back(keys=[queue.intermediate_queue_key, queue.key], args=[job_id]):
                connection.delete(intermediate.get_first_seen_key(job_id))
                recovered.append(job_id)
                record_outcome(connection, "claim_recovered")
                log.warning(
                    "job %s: claimed by a worker that never started it (%.0f s); back at "
                    "the front of %s, no attempt spent",
                    job_id,
                    now - first,
                    queue.name,
                )
            connection.hdel(seen_key, job_id)
        connection.expire(seen_key, int(10 * lease_s) + 60)
    return recovered


def recover_stranded(
    connection: Redis,
    queues: Iterable[Queue],
    older_than_s: float,
    batch: int = 500,
    offset: int = 0,
) -> tuple[list[str], int]:
    """Queue again every open job older than ``older_than_s`` that says queued while
    nothing holds it; drop ended or vanished jobs from the open set. Looks at ``batch``
    entries from ``offset`` on; returns the ids it queued and the next pass's offset
    (0 after the last entry), so a deep queue is swept a batch per pass."""
    by_name = {queue.name: queue for queue in queues}
    requeue = _script(connection, _REQUEUE_STRANDED)
    raw: Any = connection.zrangebyscore(
        OPEN_JOBS_KEY, "-inf", time.time() - older_than_s, start=offset, num=batch
    )
    ids = [_text(member) for member in raw]
    if not ids:
        return [], 0
    with connection.pipeline() as pipe:
        for job_id in ids:
            pipe.hmget(Job.key_for(job_id), "status", "origin")
        rows = pipe.execute()
    done: list[str] = []
    found: list[str] = []
    for job_id, (status, origin) in zip(ids, rows, strict=True):
        status, origin = _text(status or b""), _text(origin or b"")
        if status in ("", "finished", "failed", "canceled", "stopped"):
            done.append(job_id)
            continue
        queue = by_name.get(origin)
        if status != "queued" or queue is None:
            continue  # running (the lease covers it), or a queue this worker does not hold
        keys = [
            Job.key_for(job_id),
            queue.key,
            queue.intermediate_queue_key,
            queue.started_job_registry.key,
        ]
        if requeue(keys=keys, args=[job_id]):
            found.append(job_id)
            record_outcome(connection, "stranded_requeued")
            log.error(
                "job %s: said queued but no queue, claim or registry held it; queued again",
                job_id,
            )
    if done:
        connection.zrem(OPEN_JOBS_KEY, *done)
    next_offset = 0 if len(ids) < batch else offset + len(ids) - len(done)
    return found, next_offset


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
