"""The API process's settings: one class, read from the environment (``EDITSERVE_*``)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Validated at start; nothing else in ``service/`` reads the environment."""

    model_config = SettingsConfigDict(env_prefix="EDITSERVE_", env_file=None, extra="ignore")

    redis_url: str = Field("", description="redis://host:port/db; empty = not configured")
    blob_dir: Path = Field(Path("var/blobs"), description="local blob store root")
    max_upload_bytes: int = Field(8 * 1024 * 1024, gt=0, description="413 above this")
    max_image_pixels: int = Field(
        16 * 1024 * 1024, gt=0, description="413 above this, read from the header"
    )
    max_json_bytes: int = Field(
        1024 * 1024, gt=0, description="413 for any other request body over this"
    )
    max_json_depth: int = Field(32, ge=4, description="422 for a JSON body nested deeper than this")
    allowed_formats: tuple[str, ...] = ("PNG", "JPEG", "WEBP")
    api_keys: tuple[str, ...] = Field((), description="empty = no auth (embedded default)")
    share_uploads: bool = Field(
        False,
        description="with API keys: let every key name every upload (default: only the "
        "keys that uploaded an image may edit it)",
    )
    queue_depth_cap: int = Field(1000, gt=0, description="429 when this many jobs are queued")
    owner_queue_cap: int = Field(
        0,
        ge=0,
        description="429 when one API key has this many jobs queued or running (0: no cap)",
    )
    worker_fresh_s: float = Field(10.0, gt=0, description="/readyz wants a heartbeat this fresh")
    job_attempts: int = Field(3, ge=1, le=10, description="runs of a job whose worker dies")
    idempotency_ttl_s: int = Field(86400, gt=0)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def child_environment(overrides: dict[str, str]) -> dict[str, str]:
    """The environment a process this one starts gets: this one's, with ``overrides``
    (the embedded stack hands its children their Redis URL and blob folder this way)."""
    return {**os.environ, **overrides}
