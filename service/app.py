"""The FastAPI application factory. HTTP only: no torch, no engine."""

from __future__ import annotations

from fastapi import FastAPI

from service.blobs import LocalBlobStore
from service.errors import install_error_handlers
from service.routes import health, images
from service.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="editserve",
        version="0.1.0",
        description="Training-free image edits on frozen diffusion U-Nets.",
    )
    app.state.settings = settings
    app.state.blobs = LocalBlobStore(settings.blob_dir)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(images.router)
    return app
