"""Uploads and assets are the caller's: another key naming them gets a 404 at submit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from service.embedded import RedisProcess
from store.assets import AssetIndex
from tests.service.conftest import PNG, announce_worker, api_on_redis

FILES = {"file": ("a.png", PNG, "image/png")}


@pytest.fixture
def client(server: RedisProcess, tmp_path: Path) -> Iterator[TestClient]:
    with api_on_redis(server, tmp_path / "blobs", api_keys=("k1", "k2")) as c:
        yield c


def _upload(client: TestClient, key: str) -> str:
    r = client.post("/v1/images", files=FILES, headers={"X-API-Key": key})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _reconstruct(client: TestClient, key: str, image: str) -> Any:
    body = {"model": "shapes32", "method": "reconstruct", "inputs": {"image": image}}
    return client.post("/v1/edits", json=body, headers={"X-API-Key": key})


def _owner(key: str) -> str:
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()[:16]


def test_an_image_uploaded_by_one_key_is_a_404_for_another(client: TestClient) -> None:
    image = _upload(client, "k1")
    r = _reconstruct(client, "k2", image)
    assert r.status_code == 404, r.text
    assert r.json()["error"]["field"] == "inputs.image"
    assert r.json()["error"]["message"] == f"inputs.image: no uploaded image {image!r}"
    assert _reconstruct(client, "k1", image).status_code == 202
    # the same bytes uploaded by k2 (the same content id) are k2's too
    assert _upload(client, "k2") == image
    assert _reconstruct(client, "k2", image).status_code == 202


def test_image_lists_in_params_are_scoped_too(client: TestClient) -> None:
    image = _upload(client, "k1")
    body = {"model": "shapes32", "method": "style-noise",
            "params": {"name": "s", "images": [image, image]}}  # fmt: skip
    r = client.post("/v1/fits", json=body, headers={"X-API-Key": "k2"})
    assert r.status_code == 404 and r.json()["error"]["field"] == "params.images[0]", r.text
    assert client.post("/v1/fits", json=body, headers={"X-API-Key": "k1"}).status_code == 202


def test_share_uploads_lets_every_key_name_every_upload(
    server: RedisProcess, tmp_path: Path
) -> None:
    with api_on_redis(
        server, tmp_path / "blobs", api_keys=("k1", "k2"), share_uploads=True
    ) as client:
        image = _upload(client, "k1")
        assert _reconstruct(client, "k2", image).status_code == 202


def test_without_api_keys_every_upload_is_usable(server: RedisProcess, tmp_path: Path) -> None:
    with api_on_redis(server, tmp_path / "blobs") as client:
        image = client.post("/v1/images", files=FILES).json()["id"]
        body = {"model": "shapes32", "method": "reconstruct", "inputs": {"image": image}}
        assert client.post("/v1/edits", json=body).status_code == 202


def _asset(
    redis: Redis, owner: str | None, method: str = "directions", model: str = "shapes32"
) -> str:
    record = AssetIndex(redis).create(
        name="a", model=model, method=method, blob="0" * 64, params={}, metrics={}, owner=owner
    )
    return str(record["id"])


def test_an_asset_of_another_key_is_a_404_and_a_wrong_one_a_409(
    client: TestClient, server: RedisProcess
) -> None:
    redis = Redis.from_url(server.url)
    announce_worker(redis)
    image = _upload(client, "k2")
    mine, theirs = _asset(redis, _owner("k2")), _asset(redis, _owner("k1"))
    boundary = _asset(redis, _owner("k2"), method="boundary")
    elsewhere = _asset(redis, _owner("k2"), model="shapes32-text")

    def edit(asset: str) -> Any:
        body = {"model": "shapes32", "method": "direction", "inputs": {"image": image},
                "params": {"asset": asset}}  # fmt: skip
        return client.post("/v1/edits", json=body, headers={"X-API-Key": "k2"})

    assert edit(mine).status_code == 202
    r = edit(theirs)
    assert r.status_code == 404 and r.json()["error"]["field"] == "params.asset", r.text
    assert edit("f" * 32).status_code == 404  # no such asset: the same answer
    # it exists and is the caller's, but does not fit the request: 409 incompatible
    r = edit(boundary)
    assert r.status_code == 409 and "is a boundary asset" in r.json()["error"]["message"]
    r = edit(elsewhere)
    assert r.status_code == 409 and "fitted on model shapes32-text" in r.json()["error"]["message"]
