"""Job status, outputs and cancellation."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from contract.jobs import JobEvent, JobStatus
from contract.keys import JOB_EVENTS
from service.deps import BlobsDep, OwnerDep, QueueDep
from service.errors import ApiError, ErrorResponse
from service.jobs import JobNotFound, JobQueue

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


class ProgressPublic(BaseModel):
    step: int
    total: int
    phase: str | None = Field(
        None, description="the stage a multi-phase fit is in; step and total count its steps"
    )
    eta_s: float | None = Field(
        None, description="the phase's time left at its pace so far (None until it is known)"
    )


class JobErrorPublic(BaseModel):
    code: str
    message: str
    retryable: bool


class JobMetricsPublic(BaseModel):
    """Timings and quality figures; methods add their own (fits: fit_seconds, counts)."""

    model_config = ConfigDict(extra="allow")

    queue_ms: float | None = None
    run_ms: float | None = None
    batch_size: int | None = None
    psnr_db: float | None = None
    inversion_cached: bool | None = None


class JobPublic(BaseModel):
    id: str
    kind: str
    model: str
    method: str
    status: JobStatus
    progress: ProgressPublic
    queue_position: int | None
    created_at: float | None
    started_at: float | None
    ended_at: float | None
    error: JobErrorPublic | None
    outputs: list[str]
    output_links: list[str]
    asset: str | None = Field(None, description="the asset a fit job created")
    asset_link: str | None = None
    metrics: JobMetricsPublic


_ERRORS: dict[int | str, dict[str, Any]] = {c: {"model": ErrorResponse} for c in (401, 404, 409)}


def _owned(queue: JobQueue, job_id: str, owner: str | None) -> Any:
    try:
        job = queue.fetch(job_id)
    except JobNotFound:
        raise ApiError(404, "not_found", f"no job {job_id!r}", "id") from None
    if owner is not None and job.get_meta(refresh=False).get("owner") != owner:
        raise ApiError(404, "not_found", f"no job {job_id!r}", "id")  # not yours: not there
    return job


def _public(queue: JobQueue, job: Any) -> JobPublic:
    view = queue.view(job)
    view.pop("owner", None)
    view["output_links"] = [f"/v1/jobs/{job.id}/outputs/{n}" for n in range(len(view["outputs"]))]
    view["asset_link"] = f"/v1/assets/{view['asset']}" if view.get("asset") else None
    return JobPublic.model_validate(view)


class JobPage(BaseModel):
    jobs: list[JobPublic] = Field(description="newest first")
    next: str | None = Field(
        None,
        description="pass as `before` for the next page; null on the last page",
    )


def _page(
    queue: JobQueue, owner: str | None, limit: int, before: float | None, status: JobStatus | None
) -> JobPage:
    jobs, cursor = queue.list_jobs(owner, limit=limit, before=before, status=status)
    return JobPage(
        jobs=[_public(queue, job) for job in jobs],
        next=None if cursor is None else repr(cursor),
    )


@router.get("", response_model=JobPage, responses=_ERRORS)
async def list_jobs(
    queue: QueueDep,
    owner: OwnerDep,
    limit: Annotated[int, Query(ge=1, le=100, description="jobs per page")] = 20,
    before: Annotated[
        float | None, Query(ge=0, description="the `next` of the previous page")
    ] = None,
    status: Annotated[JobStatus | None, Query(description="only jobs in this state")] = None,
) -> JobPage:
    """The caller's jobs (with API keys: this key's; without: every job), newest first,
    for a client that lost its job ids. Jobs are listed while Redis keeps them (7 days
    after they end)."""
    return await run_in_threadpool(_page, queue, owner, limit, before, status)


@router.get("/{job_id}", response_model=JobPublic, responses=_ERRORS)
async def get_job(
    job_id: str,
    request: Request,
    queue: QueueDep,
    owner: OwnerDep,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=60,
            description="long-poll: seconds to wait for the job to end before answering",
        ),
    ] = 0,
) -> JobPublic:
    """A job's status, progress, timestamps, error, outputs and metrics.

    With ``wait``, the answer comes when the job ends (or the wait runs out), so a
    client needs one request per job instead of a polling loop.
    """
    job = await run_in_threadpool(_owned, queue, job_id, owner)
    if wait > 0 and not queue.status(job).final:
        await wait_for_end(request.app.state.redis_async, queue, job, wait)
    return await run_in_threadpool(_public, queue, job)


def _ends(data: Any) -> bool:
    """Whether a message on a job's channel is an event that ends the job."""
    try:
        return JobEvent(data.decode() if isinstance(data, bytes) else str(data)).final
    except ValueError:  # not an event: look at the job instead
        return False


async def wait_for_end(redis: Any, queue: JobQueue, job: Any, timeout: float) -> None:
    """Block until the worker announces the job's end on its channel, or the timeout."""
    if redis is None:
        return
    pubsub = redis.pubsub()
    try:
        await pubsub.subscribe(JOB_EVENTS.format(id=job.id))
        # subscribed first, then checked: an end announced in between is not missed
        if await run_in_threadpool(lambda: queue.status(job).final):
            return
        deadline = asyncio.get_running_loop().time() + timeout
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            message = await pubsub.get_message(
                ignore_subscribe_messages=True, timeout=min(left, 1.0)
            )
            if message is not None and _ends(message.get("data")):
                return
            # "retrying" wakes the poll but the job is queued again: wait on. A job failed
            # by RQ's cleanup (worker lost) is not announced: look now and then
            if await run_in_threadpool(lambda: queue.status(job).final):
                return
    finally:
        await pubsub.aclose()


@router.get(
    "/{job_id}/outputs/{n}",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **_ERRORS},
)
def get_output(job_id: str, n: int, queue: QueueDep, blobs: BlobsDep, owner: OwnerDep) -> Response:
    """Output image n of a succeeded job, as PNG."""
    view = queue.view(_owned(queue, job_id, owner))
    if view["status"] != JobStatus.SUCCEEDED.value:
        raise ApiError(409, "not_ready", f"job is {view['status']}; outputs exist once it succeeds")
    if not 0 <= n < len(view["outputs"]):
        raise ApiError(404, "not_found", f"job has {len(view['outputs'])} outputs", "n")
    try:
        data = blobs.get(view["outputs"][n])
    except KeyError:
        raise ApiError(404, "not_found", "the output blob is gone (expired?)", "n") from None
    return Response(
        content=data,
        media_type="image/png",
        headers={"Cache-Control": "private, max-age=31536000, immutable"},
    )


@router.post("/{job_id}/cancel", status_code=202, response_model=JobPublic, responses=_ERRORS)
def cancel_job(job_id: str, queue: QueueDep, owner: OwnerDep) -> JobPublic:
    """Cancel a job: a queued one at once, a running one at its next step."""
    job = _owned(queue, job_id, owner)
    if queue.status(job).final:
        raise ApiError(409, "already_final", f"job is already {queue.status(job).value}")
    queue.cancel(job)
    return _public(queue, job)
