"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from service.jobs import JobQueue
from service.settings import Settings
from store.metrics import render

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    redis: bool
    workers: int
    detail: str


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The API process is up (it says nothing of Redis or workers: see /readyz)."""
    return Health(status="ok")


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(request: Request) -> Response:
    """Prometheus metrics: queue depth, job outcomes, batch-size and latency histograms."""
    redis = request.app.state.redis
    if redis is None:
        return Response(content=b"", media_type=CONTENT_TYPE_LATEST)
    body = render(redis, JobQueue(redis).depth)
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def readyz(request: Request) -> JSONResponse:
    """Ready: Redis answers and a worker's heartbeat is fresher than worker_fresh_s."""
    settings: Settings = request.app.state.settings
    redis = request.app.state.redis
    ok_redis, workers, detail = False, 0, ""
    if redis is None:
        detail = "no Redis configured"
    else:
        try:
            ok_redis = bool(redis.ping())
            workers = len(JobQueue(redis).live_workers(settings.worker_fresh_s))
            detail = (
                "ok" if workers else f"no worker heartbeat in the last {settings.worker_fresh_s} s"
            )
        except Exception as exc:  # any Redis failure means not ready
            detail = f"redis: {type(exc).__name__}"
    ready = ok_redis and workers > 0
    body = Readiness(
        status="ready" if ready else "not_ready", redis=ok_redis, workers=workers, detail=detail
    )
    return JSONResponse(status_code=200 if ready else 503, content=body.model_dump())
