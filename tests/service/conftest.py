"""Helpers for the service tests (the session's real Redis, ``server``, is in tests/conftest.py)."""

from __future__ import annotations

import json
import time

from redis import Redis

from service.contract import HEARTBEAT_KEY, MODELS_KEY


def announce_worker(redis: Redis, model: str = "shapes32") -> None:
    """A worker's presence, as it publishes it: the API then accepts jobs for ``model``."""
    redis.hset(HEARTBEAT_KEY, "w", time.time())
    redis.hset(MODELS_KEY, "w", json.dumps([{"name": model, "family": "pixel"}]))
