"""Request bodies are bounded: size on every route (413 naming the limit), JSON depth (422)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.embedded import RedisProcess
from service.limits import BodyLimitMiddleware, json_depth
from tests.service.conftest import api_on_redis

DEEP = "[" * 10_000 + "]" * 10_000


@pytest.fixture
def client(server: RedisProcess, tmp_path: Path) -> Iterator[TestClient]:
    with api_on_redis(server, tmp_path / "blobs", max_json_bytes=64 * 1024) as c:
        yield c


def test_json_depth_counts_nesting_and_ignores_brackets_in_strings() -> None:
    assert json_depth(b"") == 0
    assert json_depth(b'{"a": [1, {"b": []}]}') == 4
    assert json_depth(b'{"a": "[[[[[[[[", "b": "\\"[[["}') == 1
    assert json_depth(DEEP.encode()) == 10_000
    assert isinstance(json_depth(b"]]]][[ \xff"), int)  # garbage: a number, no error


@pytest.mark.parametrize("path", ["/v1/images", "/v1/edits", "/v1/fits"])
def test_a_body_nested_10000_deep_is_a_422_not_a_500(client: TestClient, path: str) -> None:
    body = DEEP if path != "/v1/images" else '{"data": ' + DEEP + "}"
    r = client.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == {
        "code": "invalid_request",
        "message": "JSON nested deeper than 32 levels (max_json_depth)",
        "field": "body",
    }


def test_a_json_body_over_the_limit_is_a_413_naming_it(client: TestClient) -> None:
    big = json.dumps({"model": "shapes32", "method": "reconstruct", "pad": "x" * 70_000})
    r = client.post("/v1/edits", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "payload_too_large"
    assert "max_json_bytes" in r.json()["error"]["message"]


def test_a_streamed_body_without_a_length_is_cut_at_the_limit(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(200):  # 200 x 8 KiB, no Content-Length: chunked
            yield b"x" * 8192

    r = client.post("/v1/edits", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text


def test_an_upload_over_its_limit_is_a_413_naming_max_upload_bytes(
    server: RedisProcess, tmp_path: Path
) -> None:
    with api_on_redis(server, tmp_path / "blobs", max_upload_bytes=1000) as c:
        r = c.post("/v1/images", files={"file": ("a.png", b"\x89PNG" + b"0" * 200_000)})
    assert r.status_code == 413, r.text
    assert "max_upload_bytes" in r.json()["error"]["message"]


def test_the_middleware_stops_reading_at_the_limit() -> None:
    """A 50 MB body streamed in 64 KiB chunks: at most the limit plus one chunk is read,
    so eight such bodies at once cannot balloon the API."""
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 65536
        return {"type": "http.request", "body": b"x" * 65536, "more_body": pulled < 50 << 20}

    async def send(message: Any) -> None:
        sent.append(message)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the app must not be called")

    limit = 1 << 20
    mw = BodyLimitMiddleware(app, max_json_bytes=limit, max_upload_bytes=limit, max_json_depth=32)
    scope = {"type": "http", "path": "/v1/edits", "headers": []}
    asyncio.run(mw(scope, receive, send))
    assert sent[0]["status"] == 413
    assert pulled <= limit + 65536


def test_a_body_under_the_limit_reaches_the_route_whole(client: TestClient) -> None:
    body = {
        "model": "shapes32",
        "method": "reconstruct",
        "inputs": {"image": "0" * 64},
        "params": {"steps": 0},
    }
    r = client.post("/v1/edits", json=body)
    assert r.status_code == 422 and r.json()["error"]["field"] == "params.steps", r.text
