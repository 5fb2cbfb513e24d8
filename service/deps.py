"""Dependencies shared by the routers (``Annotated`` aliases, FastAPI style)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.blobs import BlobStore
from service.settings import Settings


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_blobs(request: Request) -> BlobStore:
    blobs: BlobStore = request.app.state.blobs
    return blobs


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
BlobsDep = Annotated[BlobStore, Depends(get_blobs)]
