"""POST /v1/images: decodable images are stored once by content; anything else is refused."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.service.conftest import PNG
from tests.service.routes.conftest import FakeQueue


def test_an_image_is_stored_under_its_content_id(routes: tuple[TestClient, FakeQueue]) -> None:
    client, _ = routes
    first = client.post("/v1/images", files={"file": ("a.png", PNG, "image/png")})
    again = client.post("/v1/images", files={"file": ("b.png", PNG, "image/png")})
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"] and len(first.json()["id"]) == 64


def test_bytes_that_are_no_image_are_a_415(routes: tuple[TestClient, FakeQueue]) -> None:
    client, _ = routes
    for data in (b"", b"0000", PNG[:40]):
        r = client.post("/v1/images", files={"file": ("x.png", data, "image/png")})
        assert r.status_code == 415, (data[:8], r.text)
        assert r.json()["error"]["field"] == "file"
