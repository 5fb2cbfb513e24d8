"""A real Redis for the service tests that need one (started once per session)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from redis import Redis

from service.contract import HEARTBEAT_KEY, MODELS_KEY
from service.embedded import RedisProcess


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    yield proc
    proc.stop()


def announce_worker(redis: Redis, model: str = "shapes32") -> None:
    """A worker's presence, as it publishes it: the API then accepts jobs for ``model``."""
    redis.hset(HEARTBEAT_KEY, "w", time.time())
    redis.hset(MODELS_KEY, "w", json.dumps([{"name": model, "family": "pixel"}]))
