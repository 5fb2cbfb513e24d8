"""POST /v1/images: content ids, both encodings, and every refusal with its status."""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.settings import Settings


def _png(width: int = 16, height: int = 16, colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    settings = Settings(
        blob_dir=tmp_path / "blobs", max_upload_bytes=200_000, max_image_pixels=512 * 512
    )
    return TestClient(create_app(settings))


def _assert_error(response: object, status: int, code: str, field: str | None) -> None:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["field"] == field
    assert body["error"]["message"]


def test_multipart_upload_returns_the_content_id(client: TestClient, tmp_path: Path) -> None:
    data = _png(24, 16)
    r = client.post("/v1/images", files={"file": ("a.png", data, "image/png")})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body == {
        "id": hashlib.sha256(data).hexdigest(),
        "width": 24,
        "height": 16,
        "format": "PNG",
        "bytes": len(data),
    }
    assert (tmp_path / "blobs" / body["id"][:2] / body["id"]).read_bytes() == data


def test_base64_and_data_url_give_the_same_id(client: TestClient) -> None:
    data = _png()
    a = client.post("/v1/images", files={"file": ("a.png", data, "image/png")}).json()["id"]
    b = client.post("/v1/images", json={"data": base64.b64encode(data).decode()}).json()["id"]
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    c = client.post("/v1/images", json={"data": url}).json()["id"]
    assert a == b == c


def test_too_many_bytes_is_413(client: TestClient) -> None:
    r = client.post(
        "/v1/images", files={"file": ("a.png", b"\x89PNG" + b"0" * 300_000, "image/png")}
    )
    _assert_error(r, 413, "payload_too_large", "file")


def test_decompression_bomb_is_refused_from_the_header(client: TestClient) -> None:
    # 4000x4000 of one colour compresses to a few KB but is 16M pixels
    r = client.post("/v1/images", files={"file": ("big.png", _png(4000, 4000), "image/png")})
    _assert_error(r, 413, "image_too_large", "file")


def test_not_an_image_is_415(client: TestClient) -> None:
    r = client.post("/v1/images", files={"file": ("a.txt", b"hello, world", "text/plain")})
    _assert_error(r, 415, "unsupported_media_type", "file")


def test_disallowed_format_is_415(client: TestClient) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="GIF")
    r = client.post("/v1/images", files={"file": ("a.gif", buf.getvalue(), "image/gif")})
    _assert_error(r, 415, "unsupported_media_type", "file")


def test_wrong_content_type_is_415(client: TestClient) -> None:
    r = client.post("/v1/images", content=_png(), headers={"content-type": "image/png"})
    _assert_error(r, 415, "unsupported_media_type", "content-type")


def test_corrupt_image_is_422(client: TestClient) -> None:
    data = _png(64, 64)
    r = client.post("/v1/images", files={"file": ("a.png", data[: len(data) // 2], "image/png")})
    _assert_error(r, 422, "invalid_image", "file")


def test_bad_base64_is_422(client: TestClient) -> None:
    _assert_error(client.post("/v1/images", json={"data": "!!!"}), 422, "invalid_request", "data")
    _assert_error(client.post("/v1/images", json={"nodata": 1}), 422, "invalid_request", "data")


def test_multipart_without_file_part_is_422(client: TestClient) -> None:
    r = client.post("/v1/images", files={"other": ("a.png", _png(), "image/png")})
    _assert_error(r, 422, "invalid_request", "file")


def test_unknown_route_has_the_error_shape(client: TestClient) -> None:
    _assert_error(client.get("/v1/nothing"), 404, "not_found", None)


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_an_exif_rotated_jpeg_reports_the_size_it_is_viewed_at(client: TestClient) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 24 x 16, viewed turned a quarter: 16 x 24
    buf = io.BytesIO()
    Image.new("RGB", (24, 16)).save(buf, "JPEG", exif=exif)
    r = client.post("/v1/images", files={"file": ("a.jpg", buf.getvalue(), "image/jpeg")})
    assert r.status_code == 201, r.text
    assert (r.json()["width"], r.json()["height"]) == (16, 24)
