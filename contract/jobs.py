"""Jobs on the wire: payloads, statuses, events and error codes (torch-free, JSON).

A job travels as a ``JobPayload`` (JSON, never pickle); images travel as content ids
into the blob store, never as bytes in Redis.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


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


# what a worker writes into the RQ job's meta, and the API reads back
META_PROGRESS, META_RESULT, META_ERROR = "progress", "result", "error"


class JobProgress(BaseModel):
    """Steps done of the current phase (a fit has several), and the phase's time left."""

    step: int = 0
    total: int = 0
    phase: str | None = None
    eta_s: float | None = Field(None, description="seconds left in this phase, by its pace")


class JobError(BaseModel):
    """Why a job failed or was canceled."""

    code: ErrorCode
    message: str
    retryable: bool


class JobResult(BaseModel):
    """A succeeded job's outputs (blob ids of PNGs), the asset it made, its metrics."""

    outputs: list[str] = Field(default_factory=list)
    asset: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
