"""HEAD, OPTIONS, Allow, ids that can name no job, and a body that is not JSON."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from redis import Redis

from contract.keys import MODELS_KEY
from contract.models import encode_models
from service.embedded import RedisProcess
from tests.service.conftest import api_on_redis, model_info


@pytest.fixture
def client(server: RedisProcess, tmp_path: Path) -> Iterator[TestClient]:
    with api_on_redis(server, tmp_path / "blobs") as c:
        yield c


def test_options_lists_every_method_of_the_path(client: TestClient) -> None:
    r = client.options("/v1/assets/abc")
    assert r.status_code == 204 and r.content == b""
    assert r.headers["allow"] == "DELETE, GET, HEAD, OPTIONS"
    assert client.options("/v1/edits").headers["allow"] == "OPTIONS, POST"


def test_a_405_names_every_method_the_path_serves(client: TestClient) -> None:
    r = client.put("/v1/assets/abc")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert r.headers["allow"] == "DELETE, GET, HEAD, OPTIONS"


def test_head_answers_as_get_without_a_body(client: TestClient) -> None:
    get, head = client.get("/v1/methods"), client.head("/v1/methods")
    assert get.status_code == head.status_code == 200
    assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"]
    assert client.head("/v1/jobs/nope").status_code == 404


@pytest.mark.parametrize("suffix", ["", "/outputs/0"])
def test_an_id_no_job_can_have_is_a_404_not_a_500(client: TestClient, suffix: str) -> None:
    # RQ raises ValueError for ids outside [A-Za-z0-9_-]; schemathesis sent this one
    r = client.get(f"/v1/jobs/V%F3%AF%83%B5%7F{suffix}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text
    r = client.post("/v1/jobs/V%F3%AF%83%B5%7F/cancel")
    assert r.status_code == 404 and r.json()["error"]["field"] == "id", r.text
    assert client.get(f"/v1/jobs/{'a' * 129}").status_code == 404


def test_a_body_that_is_not_json_is_a_422_naming_the_body(client: TestClient) -> None:
    r = client.post("/v1/edits", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == "body" and error["message"].startswith("body: not valid JSON")


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_an_image_the_model_cannot_take_is_refused_at_submit(client: TestClient) -> None:
    files = {"file": ("x.png", _png(64, 48), "image/png")}
    image = client.post("/v1/images", files=files).json()["id"]
    body = {"model": "shapes32", "method": "reconstruct", "inputs": {"image": image}}
    r = client.post("/v1/edits", json=body)
    # 409: the request is well formed, and the image exists, but they do not fit together
    assert r.status_code == 409 and r.json()["error"]["field"] == "inputs.image", r.text
    assert "takes 32x32 images, got 64x48" in r.json()["error"]["message"]
    r = client.post("/v1/edits", json={**body, "params": {"fit": "resize"}})
    assert r.status_code == 202, r.text
    # a mask of any size is fine: it is scaled to h's cells
    right = client.post("/v1/images", files={"file": ("y.png", _png(32, 32), "image/png")})
    inputs = {"content": right.json()["id"], "style": right.json()["id"], "mask": image}
    r = client.post("/v1/edits", json={"model": "shapes32", "method": "inject", "inputs": inputs})
    assert r.status_code == 202, r.text


def test_a_pixel_only_switch_on_a_latent_model_is_a_409_naming_it(
    client: TestClient, server: RedisProcess
) -> None:
    """lam's clip_x0 clamps x0 to the pixel range [-1, 1]; a latent model's x_0 is no image.
    (inject has the switch too, and runs on pixel models only.)"""
    latent = model_info("latent8", family="latent", conditional=True, sample_shape=[4, 4, 4])
    text = model_info("text32", conditional=True)
    Redis.from_url(server.url).hset(MODELS_KEY, "w", encode_models([model_info(), text, latent]))
    lam = {"name": "l", "neutral": "a circle", "target": "a red circle", "clip_x0": True}
    r = client.post("/v1/fits", json={"model": "latent8", "method": "lam", "params": lam})
    assert r.status_code == 409 and r.json()["error"]["field"] == "params.clip_x0", r.text
    assert "pixel models only" in r.json()["error"]["message"]
    # the same switch on a pixel model, and off on the latent one, is accepted
    r = client.post("/v1/fits", json={"model": "text32", "method": "lam", "params": lam})
    assert r.status_code == 202, r.text
    off = {**lam, "clip_x0": False}
    r = client.post("/v1/fits", json={"model": "latent8", "method": "lam", "params": off})
    assert r.status_code == 202, r.text
