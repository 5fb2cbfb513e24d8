"""Dependencies shared by the routers (``Annotated`` aliases, FastAPI style)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Header, Request
from redis import Redis

from service.errors import ApiError
from service.jobs import JobQueue
from service.settings import Settings
from store.blobs import BlobStore


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_blobs(request: Request) -> BlobStore:
    blobs: BlobStore = request.app.state.blobs
    return blobs


def get_redis(request: Request) -> Redis:
    redis: Redis | None = request.app.state.redis
    if redis is None:
        raise ApiError(503, "not_configured", "no Redis configured (EDITSERVE_REDIS_URL)")
    return redis


def get_queue(redis: Annotated[Redis, Depends(get_redis)], request: Request) -> JobQueue:
    settings: Settings = request.app.state.settings
    return JobQueue(redis, attempts=settings.job_attempts)


def get_owner(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> str | None:
    """The caller's identity: None without configured keys, else a digest of the key."""
    settings: Settings = request.app.state.settings
    if not settings.api_keys:
        return None
    key = x_api_key
    if key is None and authorization and authorization.lower().startswith("bearer "):
        key = authorization[7:].strip()
    if key is None:
        raise ApiError(
            401,
            "unauthorized",
            "an API key is needed (X-API-Key or Authorization: Bearer)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not any(hmac.compare_digest(key, known) for known in settings.api_keys):
        raise ApiError(
            401, "unauthorized", "unknown API key", headers={"WWW-Authenticate": "Bearer"}
        )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
BlobsDep = Annotated[BlobStore, Depends(get_blobs)]
RedisDep = Annotated[Redis, Depends(get_redis)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
OwnerDep = Annotated[str | None, Depends(get_owner)]
