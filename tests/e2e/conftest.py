"""A real stack for end-to-end tests: the bundled Redis, worker processes, the API over HTTP.

Nothing here skips: if Redis, a worker or the API cannot start, the tests error.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from service.embedded import LocalStack as Stack
from service.embedded import RedisProcess
from store.metrics import read_outcomes

ROOT = Path(__file__).resolve().parents[2]
E2E_MODEL = os.environ.get("EDITSERVE_E2E_MODEL", str(ROOT / "models" / "shapes32-ddpm"))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def stack_env(redis_url: str, blob_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of a test stack's processes: this Redis and blob store, the
    e2e model on the CPU, one thread each, and ``settings`` (EDITSERVE_* names)."""
    return {
        **os.environ,
        "EDITSERVE_REDIS_URL": redis_url,
        "EDITSERVE_BLOB_DIR": str(blob_dir),
        "EDITSERVE_MODELS": f"shapes32={E2E_MODEL}",
        "EDITSERVE_DEVICE": "cpu",
        "EDITSERVE_MAX_WAIT_MS": "50",
        "OMP_NUM_THREADS": "1",
        **settings,
    }


@pytest.fixture(scope="session")
def stack(redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    blob_dir = tmp_path_factory.mktemp("blobs")
    env = stack_env(
        redis_server.url,
        blob_dir,
        EDITSERVE_LEASE_S="4",
        EDITSERVE_MAINTENANCE_S="1",
        EDITSERVE_WORKER_FRESH_S="5",
        EDITSERVE_SHUTDOWN_GRACE_S="5",
    )
    with running(Stack(redis_url=redis_server.url, blob_dir=blob_dir, env=env), "w1") as s:
        yield s


@contextmanager
def running(stack: Stack, worker: str) -> Iterator[Stack]:
    """``stack`` with one worker named ``worker`` and the API up; all stopped after."""
    try:
        stack.start_worker(worker)
        stack.api_url = stack.start_api()
        yield stack
    finally:
        stack.stop()


def outcomes_when(redis: Any, at_least: dict[str, int], timeout: float = 10.0) -> dict[str, int]:
    """The outcome counters once each of ``at_least`` has reached its count, or as they
    stand after ``timeout`` s (the caller asserts on what it gets).

    A worker bumps a counter just after it writes the job's end (RQ's own pipeline), so
    a client that has seen a job end may read the counter a moment before it moves."""
    deadline = time.monotonic() + timeout
    while True:
        outcomes = read_outcomes(redis)
        reached = all(outcomes.get(k, 0) >= n for k, n in at_least.items())
        if reached or time.monotonic() > deadline:
            return outcomes
        time.sleep(0.02)
