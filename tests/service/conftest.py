"""Helpers for the service tests (the session's real Redis, ``server``, is in tests/conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from redis import Redis

from contract.keys import HEARTBEAT_KEY, MODELS_KEY
from contract.models import ModelInfo, encode_models
from service.app import create_app
from service.embedded import RedisProcess
from service.settings import Settings

PNG = next((Path(__file__).resolve().parents[2] / "examples").glob("*.png")).read_bytes()


def announce_worker(redis: Redis, model: str = "shapes32") -> None:
    """A worker's presence, as it publishes it: the API then accepts jobs for ``model``."""
    redis.hset(HEARTBEAT_KEY, "w", time.time())
    redis.hset(MODELS_KEY, "w", encode_models([model_info(model)]))


def model_info(name: str = "shapes32", **fields: Any) -> ModelInfo:
    """A 32 px pixel model's description, as a worker announces it."""
    base: dict[str, Any] = {
        "name": name, "family": "pixel", "image_size": [32, 32], "channels": 3,
        "sample_shape": [3, 32, 32], "h_shape": [128, 4, 4], "num_train_timesteps": 1000,
        "prediction_type": "epsilon", "device": "cpu", "dtype": "float32",
    }  # fmt: skip
    return ModelInfo(**{**base, **fields})


@contextmanager
def api_on_redis(server: RedisProcess, blob_dir: Path, **settings: Any) -> Iterator[TestClient]:
    """The app on an emptied real Redis with a worker announced but none running (jobs
    stay queued); the Redis is emptied again afterwards."""
    redis = Redis.from_url(server.url)
    redis.flushdb()
    announce_worker(redis)
    app = create_app(Settings(blob_dir=blob_dir, redis_url=server.url, **settings), redis=redis)
    try:
        yield TestClient(app, raise_server_exceptions=False)
    finally:
        redis.flushdb()
