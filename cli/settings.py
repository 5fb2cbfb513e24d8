"""The command line's settings, read from the environment (``EDITSERVE_URL``, ``_API_KEY``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CliSettings(BaseSettings):
    """Where the client commands find the API, and the key they send."""

    model_config = SettingsConfigDict(env_prefix="EDITSERVE_", extra="ignore")

    url: str = Field("http://127.0.0.1:8000", description="the API's base URL")
    api_key: str | None = Field(None, description="sent as X-API-Key")
