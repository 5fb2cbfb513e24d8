"""The routes on their own: the queue replaced by a fake at the boundary (``get_queue``).

Redis stays real (the bundled server) for what the routes keep in it themselves:
idempotency records, image owners, the asset index.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from contract.jobs import JobKind, JobPayload, JobStatus
from service.app import create_app
from service.deps import get_queue
from service.embedded import RedisProcess
from service.jobs import HeldModel, JobNotFound
from service.settings import Settings
from tests.service.conftest import model_info


@dataclass
class FakeJob:
    payload: JobPayload
    status: JobStatus = JobStatus.QUEUED
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.payload.id

    def get_meta(self, refresh: bool = True) -> dict[str, Any]:
        return {**self.meta, "owner": self.payload.owner}


class FakeQueue:
    """``JobQueue``'s surface as the routes use it, in memory."""

    def __init__(self) -> None:
        self.models = {"shapes32": HeldModel(info=model_info("shapes32"), workers=1)}
        self.jobs: dict[str, FakeJob] = {}
        self.places: dict[str, set[str]] = {}
        self.next_ids: list[str] = []
        self.depth_now = 0

    def model_descriptions(self, fresh_s: float) -> dict[str, HeldModel]:
        return dict(self.models)

    def depth(self) -> int:
        return self.depth_now

    def new_id(self) -> str:
        return self.next_ids.pop(0) if self.next_ids else f"job{len(self.jobs)}"

    def reserve_owner_place(self, owner: str, job_id: str, cap: int) -> tuple[bool, int]:
        held = self.places.setdefault(owner, set())
        if len(held) >= cap:
            return False, len(held)
        held.add(job_id)
        return True, len(held)

    def release_owner_place(self, owner: str, job_id: str) -> None:
        self.places.get(owner, set()).discard(job_id)

    def submit(self, payload: JobPayload) -> FakeJob:
        self.jobs[payload.id] = FakeJob(payload)
        return self.jobs[payload.id]

    def fetch(self, job_id: str) -> FakeJob:
        if job_id not in self.jobs:
            raise JobNotFound(job_id)
        return self.jobs[job_id]

    def status(self, job: FakeJob) -> JobStatus:
        return job.status

    def cancel(self, job: FakeJob) -> JobStatus:
        job.status = JobStatus.CANCELED
        return job.status

    def view(self, job: FakeJob) -> dict[str, Any]:
        result = job.meta.get("result") or {}
        succeeded = job.status is JobStatus.SUCCEEDED
        return {
            "id": job.id, "kind": job.payload.kind.value, "model": job.payload.model,
            "method": job.payload.method, "status": job.status.value,
            "progress": {"step": 0, "total": 0}, "queue_position": None,
            "created_at": time.time(), "started_at": None, "ended_at": None, "error": None,
            "outputs": result.get("outputs", []) if succeeded else [],
            "asset": result.get("asset") if succeeded else None,
            "metrics": result.get("metrics", {}), "owner": job.payload.owner,
        }  # fmt: skip

    def list_jobs(
        self, owner: str | None, *, limit: int, before: float | None, status: JobStatus | None
    ) -> tuple[list[FakeJob], float | None]:
        jobs = [j for j in self.jobs.values() if owner is None or j.payload.owner == owner]
        return jobs[:limit], None


@pytest.fixture
def fake_queue() -> FakeQueue:
    return FakeQueue()


@pytest.fixture
def routes(
    server: RedisProcess, tmp_path: Path, fake_queue: FakeQueue
) -> Iterator[tuple[TestClient, FakeQueue]]:
    """A client of the app whose queue is ``fake_queue`` (and a clean real Redis)."""
    redis = Redis.from_url(server.url)
    redis.flushdb()
    app = create_app(Settings(blob_dir=tmp_path / "blobs", redis_url=server.url), redis=redis)
    app.dependency_overrides[get_queue] = lambda: fake_queue
    try:
        yield TestClient(app, raise_server_exceptions=False), fake_queue
    finally:
        redis.flushdb()
        redis.close()


def kind_of(queue: FakeQueue, job_id: str) -> JobKind:
    return queue.jobs[job_id].payload.kind
