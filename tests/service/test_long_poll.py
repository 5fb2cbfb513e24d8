"""The long-poll waits for a job's end, not for any announcement on its channel.

A worker that loses a run with attempts left announces ``retrying`` and queues the
job again; a client waiting with ``?wait=`` must go on waiting (it used to get its
answer at once, with the job queued). An end event ends the wait early.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from contract.jobs import JobEvent
from contract.keys import JOB_EVENTS
from service.embedded import RedisProcess
from tests.service.conftest import PNG, api_on_redis


@pytest.fixture
def client(server: RedisProcess, tmp_path: Path) -> Iterator[TestClient]:
    with api_on_redis(server, tmp_path / "blobs") as c:
        yield c


def _queued_job(client: TestClient) -> str:
    image = client.post("/v1/images", files={"file": ("a.png", PNG, "image/png")}).json()["id"]
    body = {"model": "shapes32", "method": "reconstruct", "inputs": {"image": image}}
    r = client.post("/v1/edits", json=body)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _announce_later(server: RedisProcess, job_id: str, event: JobEvent, after: float) -> None:
    def announce() -> None:
        time.sleep(after)
        Redis.from_url(server.url).publish(JOB_EVENTS.format(id=job_id), event.value)

    threading.Thread(target=announce, daemon=True).start()


def test_a_retry_announcement_does_not_end_the_wait(
    client: TestClient, server: RedisProcess
) -> None:
    job_id = _queued_job(client)
    _announce_later(server, job_id, JobEvent.RETRYING, after=0.3)
    start = time.monotonic()
    job = client.get(f"/v1/jobs/{job_id}", params={"wait": 2}).json()
    waited = time.monotonic() - start
    assert job["status"] == "queued"
    assert waited >= 1.9, f"the wait ended after {waited:.2f} s, at the retry announcement"


def test_an_end_announcement_ends_the_wait_early(client: TestClient, server: RedisProcess) -> None:
    job_id = _queued_job(client)
    _announce_later(server, job_id, JobEvent.CANCELED, after=0.3)
    start = time.monotonic()
    client.get(f"/v1/jobs/{job_id}", params={"wait": 10})
    assert time.monotonic() - start < 5.0  # the announcement, not the 10 s timeout
