"""The FastAPI application factory. HTTP only: no torch, no engine."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from service.errors import install_error_handlers
from service.http_methods import MethodsMiddleware
from service.limits import BodyLimitMiddleware
from service.openapi_contract import finish as finish_openapi
from service.routes import assets, catalog, edits, health, images, jobs
from service.settings import Settings, get_settings
from store.blobs import LocalBlobStore


def create_app(settings: Settings | None = None, redis: Redis | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="editserve",
        version="0.1.0",
        description="Training-free image edits on frozen diffusion U-Nets.",
        # operation ids are the route functions' names: a generated client's calls
        # read create_edit, get_job, get_output
        generate_unique_id_function=lambda route: route.name,
    )
    app.state.settings = settings
    app.state.blobs = LocalBlobStore(settings.blob_dir)
    if redis is None and settings.redis_url:
        redis = Redis.from_url(settings.redis_url)
    app.state.redis = redis
    # long-polls wait on pub/sub without holding a thread
    app.state.redis_async = AsyncRedis.from_url(settings.redis_url) if settings.redis_url else None
    install_error_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware,
        max_json_bytes=settings.max_json_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        max_json_depth=settings.max_json_depth,
    )
    app.add_middleware(MethodsMiddleware, routes=app.router.routes)
    for router in (health.router, images.router, edits.build_router(), jobs.router,
                   assets.router, catalog.router):  # fmt: skip
        app.include_router(router)
    generated = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = finish_openapi(generated())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
