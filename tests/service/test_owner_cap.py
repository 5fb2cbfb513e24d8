"""One API key cannot fill the queue: a per-key cap on jobs queued or running."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from contract.keys import OWNER_JOBS
from service.embedded import RedisProcess
from service.jobs import OWNER_RESERVE_GRACE_S, JobQueue
from tests.service.conftest import PNG, api_on_redis


@pytest.fixture
def client(server: RedisProcess, tmp_path: Path) -> Iterator[TestClient]:
    with api_on_redis(
        server, tmp_path / "blobs", api_keys=("alice", "bob"), owner_queue_cap=2
    ) as c:
        yield c


def _edit(client: TestClient, key: str, image: str) -> tuple[int, dict[str, object]]:
    body = {"model": "shapes32", "method": "reconstruct", "inputs": {"image": image}}
    r = client.post("/v1/edits", json=body, headers={"X-API-Key": key})
    return r.status_code, r.json()


def test_a_key_at_its_cap_gets_429_and_others_do_not(client: TestClient) -> None:
    files = {"file": ("a.png", PNG, "image/png")}
    image = client.post("/v1/images", files=files, headers={"X-API-Key": "alice"}).json()["id"]
    first = [_edit(client, "alice", image) for _ in range(2)]
    assert [status for status, _ in first] == [202, 202]
    status, body = _edit(client, "alice", image)
    assert status == 429 and body["error"]["code"] == "owner_queue_full"  # type: ignore[index]
    assert "the cap is 2" in body["error"]["message"]  # type: ignore[index]
    # another key is not held up (it uploads the image too: uploads are per key)
    assert client.post("/v1/images", files=files, headers={"X-API-Key": "bob"}).status_code == 201
    assert _edit(client, "bob", image)[0] == 202

    # a job that ends (here: canceled) frees its place
    job_id = first[0][1]["id"]
    r = client.post(f"/v1/jobs/{job_id}/cancel", headers={"X-API-Key": "alice"})
    assert r.status_code == 202 and r.json()["status"] == "canceled"
    assert _edit(client, "alice", image)[0] == 202
    assert _edit(client, "alice", image)[0] == 429


def test_an_idempotent_replay_is_not_a_new_job(client: TestClient) -> None:
    files = {"file": ("a.png", PNG, "image/png")}
    image = client.post("/v1/images", files=files, headers={"X-API-Key": "alice"}).json()["id"]
    body = {"model": "shapes32", "method": "reconstruct", "inputs": {"image": image}}
    headers = {"X-API-Key": "alice", "Idempotency-Key": "k1"}
    for _ in range(2):  # the second is a replay of the first
        assert client.post("/v1/edits", json=body, headers=headers).status_code == 202
    assert _edit(client, "alice", image)[0] == 202
    assert _edit(client, "alice", image)[0] == 429


def test_racing_submits_of_one_key_never_exceed_the_cap(client: TestClient) -> None:
    """16 submits at once against a cap of 2: the check and the place are one step."""
    files = {"file": ("a.png", PNG, "image/png")}
    image = client.post("/v1/images", files=files, headers={"X-API-Key": "alice"}).json()["id"]
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda _: _edit(client, "alice", image)[0], range(16)))
    assert sorted(codes) == [202] * 2 + [429] * 14


def test_the_places_are_atomic_and_a_stale_reservation_is_dropped(server: RedisProcess) -> None:
    redis = Redis.from_url(server.url)
    redis.flushdb()
    queue = JobQueue(redis)
    barrier = threading.Barrier(32)

    def reserve(i: int) -> bool:
        barrier.wait()
        return queue.reserve_owner_place("carol", f"job-{i}", 5)[0]

    with ThreadPoolExecutor(32) as pool:
        taken = list(pool.map(reserve, range(32)))
    assert sum(taken) == 5  # none of the 5 places has a job yet: submits in flight count
    key = OWNER_JOBS.format(owner="carol")
    stale = time.time() - OWNER_RESERVE_GRACE_S - 1
    redis.zadd(key, {f"job-{i}": stale for i in range(32)})  # their submits died
    assert queue.reserve_owner_place("carol", "fresh", 5) == (True, 1)
    queue.release_owner_place("carol", "fresh")
    assert redis.zcard(key) == 0
    redis.flushdb()


def test_a_submit_that_fails_to_enqueue_leaves_no_ghost(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis fails between the idempotency record and the enqueue: the record and the
    place are given back, so the client's retry with the same key makes the job."""
    files = {"file": ("a.png", PNG, "image/png")}
    image = client.post("/v1/images", files=files, headers={"X-API-Key": "alice"}).json()["id"]
    body = {"model": "shapes32", "method": "reconstruct", "inputs": {"image": image}}
    headers = {"X-API-Key": "alice", "Idempotency-Key": "k2"}
    submit = JobQueue.submit

    def broken(self: JobQueue, payload: object) -> None:
        raise RedisConnectionError("connection lost")

    monkeypatch.setattr(JobQueue, "submit", broken)
    r = client.post("/v1/edits", json=body, headers=headers)
    assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
    monkeypatch.setattr(JobQueue, "submit", submit)
    r = client.post("/v1/edits", json=body, headers=headers)
    assert r.status_code == 202 and "Idempotent-Replayed" not in r.headers
    assert client.get(f"/v1/jobs/{r.json()['id']}", headers=headers).status_code == 200
    assert _edit(client, "alice", image)[0] == 202  # the failed submit held no place
    assert _edit(client, "alice", image)[0] == 429
