"""GET /v1/jobs: a client that lost its job ids finds them again, page by page."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from contract.keys import JOB_INDEX
from service.embedded import RedisProcess
from tests.service.conftest import PNG, api_on_redis


@pytest.fixture
def client(server: RedisProcess, tmp_path: Path) -> Iterator[TestClient]:
    with api_on_redis(server, tmp_path / "blobs", api_keys=("alice", "bob")) as c:
        yield c


def _submit(client: TestClient, key: str, n: int) -> list[str]:
    files = {"file": ("a.png", PNG, "image/png")}
    image = client.post("/v1/images", files=files, headers={"X-API-Key": key}).json()["id"]
    body = {"model": "shapes32", "method": "reconstruct", "inputs": {"image": image}}
    ids = []
    for _ in range(n):
        r = client.post("/v1/edits", json=body, headers={"X-API-Key": key})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    return ids


def _pages(client: TestClient, key: str, **query: str | int) -> list[list[str]]:
    pages: list[list[str]] = []
    params: dict[str, str | int] = {**query}
    while True:
        r = client.get("/v1/jobs", params=params, headers={"X-API-Key": key})
        assert r.status_code == 200, r.text
        pages.append([job["id"] for job in r.json()["jobs"]])
        if r.json()["next"] is None:
            return pages
        params["before"] = r.json()["next"]


def test_pages_are_newest_first_complete_and_per_key(client: TestClient) -> None:
    alice = _submit(client, "alice", 5)
    bob = _submit(client, "bob", 2)
    pages = _pages(client, "alice", limit=2)
    assert [len(p) for p in pages] == [2, 2, 1]  # a short page is the last
    assert [i for p in pages for i in p] == alice[::-1]  # each once, newest first
    assert _pages(client, "bob") == [bob[::-1]]
    first = client.get("/v1/jobs", headers={"X-API-Key": "bob"}).json()["jobs"][0]
    assert first["status"] == "queued" and first["method"] == "reconstruct"


def test_status_filter_and_gone_jobs(client: TestClient, server: RedisProcess) -> None:
    ids = _submit(client, "alice", 4)
    r = client.post(f"/v1/jobs/{ids[1]}/cancel", headers={"X-API-Key": "alice"})
    assert r.status_code == 202
    assert _pages(client, "alice", status="canceled") == [[ids[1]]]
    # the last page has no `next`, also when it is full
    assert _pages(client, "alice", status="queued", limit=1) == [[ids[3]], [ids[2]], [ids[0]]]
    assert _pages(client, "alice", limit=2) == [[ids[3], ids[2]], [ids[1], ids[0]]]
    canceled = client.get(f"/v1/jobs/{ids[1]}", headers={"X-API-Key": "alice"}).json()
    assert canceled["ended_at"] is not None and canceled["ended_at"] >= canceled["created_at"]
    redis = Redis.from_url(server.url)
    redis.delete(f"rq:job:{ids[0]}")  # Redis no longer keeps it: it is not listed
    assert _pages(client, "alice") == [[ids[3], ids[2], ids[1]]]
    assert redis.zscore(JOB_INDEX.format(owner="alice"), ids[0]) is None  # and dropped


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"status": "done"}, "status"),
        ({"before": "x"}, "before"),
    ],
)
def test_bad_queries_name_the_field(
    client: TestClient, query: dict[str, str | int], field: str
) -> None:
    r = client.get("/v1/jobs", params=query, headers={"X-API-Key": "alice"})
    assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text
