"""One API key cannot fill the queue: a per-key cap on jobs queued or running."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from service.app import create_app
from service.embedded import RedisProcess
from service.settings import Settings
from tests.service.conftest import announce_worker

PNG = next((Path(__file__).resolve().parents[2] / "examples").glob("*.png")).read_bytes()


@pytest.fixture
def client(server: RedisProcess, tmp_path: Path) -> Iterator[TestClient]:
    redis = Redis.from_url(server.url)
    redis.flushdb()
    announce_worker(redis)  # no worker runs: jobs stay queued
    settings = Settings(blob_dir=tmp_path / "blobs", redis_url=server.url,
                        api_keys=("alice", "bob"), owner_queue_cap=2)  # fmt: skip
    yield TestClient(create_app(settings, redis=redis))
    redis.flushdb()


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
    assert _edit(client, "bob", image)[0] == 202  # another key is not held up

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
