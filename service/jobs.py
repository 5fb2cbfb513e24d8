"""The API's side of the queue: submit jobs to RQ, read them back as the public job view.

RQ's job status is the source of truth for the lifecycle; the worker keeps
progress, structured errors and results in the job's meta.

===================================  ==============
RQ status                            public status
===================================  ==============
queued, deferred, scheduled          queued
started                              running
finished                             succeeded
failed                               failed
canceled, stopped                    canceled
===================================  ==============
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis import Redis
from rq import Queue, Retry
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.serializers import JSONSerializer
from rq.utils import now as utcnow
from rq.utils import utcformat

from contract.jobs import (
    META_ERROR,
    META_PROGRESS,
    META_RESULT,
    RETRYABLE,
    ErrorCode,
    JobError,
    JobEvent,
    JobKind,
    JobPayload,
    JobProgress,
    JobResult,
    JobStatus,
)
from contract.keys import (
    CANCEL_KEY,
    HEARTBEAT_KEY,
    JOB_EVENTS,
    JOB_INDEX,
    MODELS_KEY,
    OPEN_JOBS_KEY,
    OWNER_JOBS,
    doorbell_key,
    queue_name,
)
from contract.models import ModelInfo, decode_models

DOORBELL_DEPTH = 64  # tokens kept per queue; more would only wake workers for nothing

# what RQ accepts as a job id (ours are uuid4 hex); any other string names no job
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
RUNNER = "worker.jobs.perform"  # the RQ job function (JSON args: the payload)


OWNER_RESERVE_GRACE_S = 60  # a place taken by a submit whose job is not (yet) in Redis

# Take a place for job ARGV[3] among KEYS[1]'s owner's jobs if fewer than ARGV[2] are
# queued or running, in one step (two racing submits cannot both take the last place).
# Members whose RQ job has ended are dropped; a member without a job hash is a submit
# in flight, counted for ARGV[4] s. Returns the places taken after the call, negated
# when refused. (Reads rq:job:* keys it is not given: fine on one Redis, not a cluster.)
_RESERVE = """
local now, cap, grace = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local final = {}
for i = 6, #ARGV do final[ARGV[i]] = true end
local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local live = 0
for i = 1, #members, 2 do
  local id, at = members[i], tonumber(members[i + 1])
  local status = redis.call('HGET', 'rq:job:' .. id, 'status')
  if (status and final[status]) or (not status and now - at > grace) then
    redis.call('ZREM', KEYS[1], id)
  else
    live = live + 1
  end
end
if live >= cap then return -live end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return live + 1
"""

_STATUS = {
    RQStatus.QUEUED: JobStatus.QUEUED,
    RQStatus.DEFERRED: JobStatus.QUEUED,
    RQStatus.SCHEDULED: JobStatus.QUEUED,
    RQStatus.STARTED: JobStatus.RUNNING,
    RQStatus.FINISHED: JobStatus.SUCCEEDED,
    RQStatus.FAILED: JobStatus.FAILED,
    RQStatus.CANCELED: JobStatus.CANCELED,
    RQStatus.STOPPED: JobStatus.CANCELED,
}
_FINAL = [rq.value for rq, ours in _STATUS.items() if ours.final]  # raw values, for Lua


def mark_ended(redis: Redis, job: Job) -> None:
    """Record when a canceled job ended (RQ's cancel leaves ``ended_at`` empty)."""
    redis.hset(job.key, "ended_at", utcformat(utcnow()))


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class JobNotFound(KeyError):
    pass


@dataclass
class HeldModel:
    """A model as live workers announce it, and how many of them hold it."""

    info: ModelInfo
    workers: int = 0


class JobQueue:
    """Submit, read, cancel; plus the worker presence the API reports."""

    def __init__(
        self,
        redis: Redis,
        *,
        result_ttl: int = 7 * 86400,
        attempts: int = 3,
        job_timeout: int = 3600,
    ) -> None:
        self.redis = redis
        self._reserve = redis.register_script(_RESERVE)
        self.result_ttl = result_ttl
        self.attempts = attempts
        self.job_timeout = job_timeout

    def _queue(self, model: str, kind: JobKind) -> Queue:
        return Queue(queue_name(model, kind), connection=self.redis, serializer=JSONSerializer)

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    def submit(self, payload: JobPayload) -> Job:
        # indexed first: an index entry whose enqueue failed is dropped when listed,
        # while a job queued without its entry would never be listed
        index = JOB_INDEX.format(owner=payload.owner or "-")
        now = time.time()
        with self.redis.pipeline() as pipe:
            pipe.zremrangebyscore(index, "-inf", now - self.result_ttl)  # bounded by the TTL
            pipe.zadd(index, {payload.id: now})
            pipe.expire(index, self.result_ttl)
            pipe.zremrangebyscore(OPEN_JOBS_KEY, "-inf", now - self.result_ttl)
            pipe.zadd(OPEN_JOBS_KEY, {payload.id: now})
            pipe.execute()
        queue = self._queue(payload.model, payload.kind)
        job = queue.enqueue(
            RUNNER,
            payload.model_dump(mode="json"),
            job_id=payload.id,
            retry=Retry(max=max(0, self.attempts - 1)) if self.attempts > 1 else None,
            job_timeout=self.job_timeout,
            result_ttl=self.result_ttl,
            failure_ttl=self.result_ttl,
            description=f"{payload.method} on {payload.model}",
            meta={"owner": payload.owner, "kind": payload.kind.value},
        )
        bell = doorbell_key(queue.key)
        with self.redis.pipeline() as pipe:  # wake an idle worker
            pipe.lpush(bell, 1)
            pipe.ltrim(bell, 0, DOORBELL_DEPTH - 1)
            pipe.expire(bell, 3600)
            pipe.execute()
        return job

    def reserve_owner_place(self, owner: str, job_id: str, cap: int) -> tuple[bool, int]:
        """Take a place for ``job_id`` among ``owner``'s queued or running jobs, unless
        ``cap`` are taken. (taken?, places held by the owner now). Atomic: concurrent
        submits of one owner never take more than ``cap`` places."""
        args = [time.time(), cap, job_id, OWNER_RESERVE_GRACE_S, self.result_ttl, *_FINAL]
        held = int(self._reserve(keys=[OWNER_JOBS.format(owner=owner)], args=args))
        return held > 0, abs(held)

    def release_owner_place(self, owner: str, job_id: str) -> None:
        """Give a place back: the submit that took it did not enqueue its job."""
        self.redis.zrem(OWNER_JOBS.format(owner=owner), job_id)

    def list_jobs(
        self,
        owner: str | None,
        *,
        limit: int,
        before: float | None = None,
        status: JobStatus | None = None,
    ) -> tuple[list[Job], float | None]:
        """``owner``'s jobs, newest first: up to ``limit`` submitted before ``before`` (a
        submit time; None: now), of ``status`` if given; and the cursor of the next page
        (None when no job is left after this page, even when the page is full). Entries
        whose job Redis no longer holds are dropped on the way (``submit`` drops those
        past the results' TTL)."""
        index = JOB_INDEX.format(owner=owner or "-")
        top = "+inf" if before is None else f"({before!r}"  # "(": strictly before
        found: list[Job] = []
        last_score = 0.0  # the score of found[limit - 1]: the next page's cursor
        chunk = max(limit + 1, 50)
        while True:
            raw: Any = self.redis.zrevrangebyscore(
                index, top, "-inf", start=0, num=chunk, withscores=True
            )
            rows: list[tuple[bytes, float]] = list(raw)
            if not rows:
                return found, None
            ids = [_text(member) for member, _ in rows]
            jobs = Job.fetch_many(ids, connection=self.redis, serializer=JSONSerializer)
            gone = [job_id for job_id, job in zip(ids, jobs, strict=True) if job is None]
            if gone:
                self.redis.zrem(index, *gone)
            for (_, score), job in zip(rows, jobs, strict=True):
                if job is not None and (status is None or self.status(job) == status):
                    if len(found) == limit:  # one more exists: the page is not the last
                        return found, last_score
                    found.append(job)
                    last_score = float(score)
            top = f"({float(rows[-1][1])!r}"
            if len(rows) < chunk:
                return found, None

    def fetch(self, job_id: str) -> Job:
        if not JOB_ID.fullmatch(job_id):  # RQ raises ValueError on such an id: none exists
            raise JobNotFound(job_id)
        try:
            return Job.fetch(job_id, connection=self.redis, serializer=JSONSerializer)
        except NoSuchJobError:
            raise JobNotFound(job_id) from None

    def cancel(self, job: Job) -> JobStatus:
        """Queued: canceled now. Running: flagged; the worker stops it at its next step."""
        status = self.status(job)
        if status.final:
            return status
        if status == JobStatus.QUEUED:
            try:
                job.cancel()
                mark_ended(self.redis, job)
                self.redis.publish(JOB_EVENTS.format(id=job.id), JobEvent.CANCELED.value)
                return JobStatus.CANCELED
            except InvalidJobOperation:
                return self.status(job)
        self.redis.set(CANCEL_KEY.format(id=job.id), 1, ex=3600)
        return JobStatus.RUNNING

    @staticmethod
    def status(job: Job) -> JobStatus:
        rq_status = job.get_status(refresh=True)
        return _STATUS.get(rq_status, JobStatus.QUEUED) if rq_status else JobStatus.QUEUED

    def view(self, job: Job) -> dict[str, Any]:
        """The public job view (GET /v1/jobs/{id})."""
        job.refresh()  # one read of the job hash: status, meta, timestamps
        rq_status = job.get_status(refresh=False)
        status = _STATUS.get(rq_status, JobStatus.QUEUED) if rq_status else JobStatus.QUEUED
        meta = job.get_meta(refresh=False)
        payload = JobPayload.model_validate(job.args[0])
        result = JobResult.model_validate(meta.get(META_RESULT) or {})
        error = JobError.model_validate(meta[META_ERROR]) if meta.get(META_ERROR) else None
        if status == JobStatus.FAILED and error is None:
            # failed without a word from a worker: its worker died and retries are spent
            error = JobError(
                code=ErrorCode.WORKER_LOST,
                message=f"the worker running this job was lost; gave up after "
                f"{payload.max_attempts} attempts",
                retryable=ErrorCode.WORKER_LOST in RETRYABLE,
            )
        position = None
        if status == JobStatus.QUEUED:
            position = job.get_position()
        progress = JobProgress.model_validate(meta.get(META_PROGRESS) or {})
        if status == JobStatus.SUCCEEDED and progress.total:
            progress = JobProgress(step=progress.total, total=progress.total)
        return {
            "id": job.id,
            "kind": payload.kind.value,
            "model": payload.model,
            "method": payload.method,
            "status": status.value,
            "progress": progress.model_dump(mode="json", exclude_none=True),
            "queue_position": position,
            "created_at": _ts(job.created_at),
            "started_at": _ts(job.started_at) if status != JobStatus.QUEUED else None,
            "ended_at": _ts(job.ended_at) if status.final else None,
            "error": error.model_dump(mode="json")
            if error is not None and status in (JobStatus.FAILED, JobStatus.CANCELED)
            else None,
            "outputs": result.outputs if status == JobStatus.SUCCEEDED else [],
            "asset": result.asset if status == JobStatus.SUCCEEDED else None,
            "metrics": result.metrics,
            "owner": meta.get("owner"),
        }

    # ---------------------------------------------------------------- presence
    def depth(self) -> int:
        """Queued jobs across every model's queue."""
        total = 0
        for model in self.models():
            for kind in JobKind:
                total += int(self.redis.llen(self._queue(model, kind).key))
        return total

    def live_workers(self, fresh_s: float) -> dict[str, float]:
        now = time.time()
        beats = self.redis.hgetall(HEARTBEAT_KEY)
        return {_text(name): float(ts) for name, ts in beats.items() if now - float(ts) <= fresh_s}

    def model_descriptions(self, fresh_s: float) -> dict[str, HeldModel]:
        """Every model a live worker holds, by name, with how many hold it."""
        live = self.live_workers(fresh_s)
        out: dict[str, HeldModel] = {}
        for name, raw in self.redis.hgetall(MODELS_KEY).items():
            if _text(name) not in live:
                continue
            for model in decode_models(raw):
                entry = out.setdefault(model.name, HeldModel(info=model))
                entry.workers += 1
        return out

    def models(self) -> list[str]:
        names: set[str] = set()
        for raw in self.redis.hgetall(MODELS_KEY).values():
            names.update(m.name for m in decode_models(raw))
        return sorted(names)
