"""The contract between the API and the workers: torch-free, JSON on the wire.

This is the only module ``service/`` and ``worker/`` share. A job travels as a
``JobPayload`` (JSON, never pickle); images travel as content ids into the blob
store, never as bytes in Redis.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

QUEUE_PREFIX = "editserve"
HEARTBEAT_KEY = "editserve:workers:heartbeat"  # hash: worker name -> unix time of last beat
MODELS_KEY = "editserve:workers:models"  # hash: worker name -> JSON list of model descriptions
CANCEL_KEY = "editserve:cancel:{id}"  # set by the API; a running job stops at its next step
JOB_EVENTS = "editserve:job-events:{id}"  # pub/sub: the worker announces a job's end
# sorted set: every accepted job not yet seen ended, by submit time; a worker's
# maintenance queues again any that says queued while nothing holds it
OPEN_JOBS_KEY = "editserve:open-jobs"


def doorbell_key(queue_key: str) -> str:
    """A list the API pushes a token to after each submit to ``queue_key`` (the RQ
    queue's Redis key): idle workers block on it. It carries no job."""
    return f"{queue_key}:doorbell"


class JobStatus(StrEnum):
    """The lifecycle: queued -> running -> succeeded | failed | canceled.

    A running job whose worker died goes back to queued (at-least-once) until its
    attempts are spent; then it fails with ``worker_lost``. The last three are final.
    """

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def final(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)


class JobEvent(StrEnum):
    """What a worker (or the API, for a cancel) announces on a job's ``JOB_EVENTS``
    channel. ``retrying`` is not a status: the job is queued again for another
    attempt, so a long-poll waiting for the end goes on waiting."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    RETRYING = "retrying"

    @property
    def final(self) -> bool:
        """The job has ended (every event but ``retrying``)."""
        return self is not JobEvent.RETRYING


class JobKind(StrEnum):
    EDIT = "edit"
    FIT = "fit"


class ErrorCode(StrEnum):
    INVALID_INPUT = "invalid_input"  # the request cannot succeed as it is
    MODEL_UNAVAILABLE = "model_unavailable"  # no worker serves the model
    WORKER_LOST = "worker_lost"  # the worker died mid-run, and retries are spent
    CANCELED = "canceled"
    INTERNAL = "internal"  # a bug: the message says what, the logs say where


RETRYABLE = {ErrorCode.WORKER_LOST, ErrorCode.MODEL_UNAVAILABLE, ErrorCode.INTERNAL}


class JobPayload(BaseModel):
    """What the worker needs to run a job; stored as the RQ job's only argument (JSON)."""

    id: str
    kind: JobKind
    model: str
    method: str
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, str] = Field(default_factory=dict, description="role -> image content id")
    seed: int = 0
    owner: str | None = None
    max_attempts: int = 3


def queue_name(model: str, kind: JobKind = JobKind.EDIT) -> str:
    """Two RQ queues per model, edits and fits; the workers that hold the model listen on
    every edit queue before any fit queue, so a queued edit never waits behind a queued
    fit (a fit can take minutes; an edit, a second). ``model`` has no ':' (settings)."""
    return f"{QUEUE_PREFIX}:{model}" if kind == JobKind.EDIT else f"{QUEUE_PREFIX}:{model}:fits"
