"""Malformed requests of every shape get a 4xx in the error shape, never a 5xx.

Seeded random bodies against both submit routes (a real Redis, no worker), plus odd
paths and queries on the read routes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.embedded import RedisProcess
from tests.service.conftest import PNG, api_on_redis

PARAMS = ["steps", "g", "t_edit", "w", "refine", "scale", "d", "eta", "prompt", "fit",
          "asset", "kind", "samples", "k", "name", "factor", "value", "t_start"]  # fmt: skip


@pytest.fixture
def client(server: RedisProcess, tmp_path: Path) -> Iterator[TestClient]:
    with api_on_redis(server, tmp_path / "blobs") as c:
        yield c


JUNK: list[Any] = [None, -1, 0, 1, 1e308, -1e308, 3.5, "", "x" * 5000, [], {}, [1, 2],
                   {"a": 1}, True, "nan", 2**70, "../../etc/passwd", "\x00"]  # fmt: skip


def _junk(rnd: random.Random, image: str) -> Any:
    return rnd.choice([*JUNK, image])


def test_random_malformed_submits_never_get_a_5xx(client: TestClient) -> None:
    image = client.post("/v1/images", files={"file": ("a.png", PNG, "image/png")}).json()["id"]
    names = [m["name"] for m in client.get("/v1/methods").json()]
    rnd = random.Random(0)
    codes: dict[int, int] = {}
    for _ in range(600):
        body: dict[str, Any] = {
            "model": rnd.choice(["shapes32", "nope", 5, None]),
            "method": rnd.choice([*names, "nope", 3]),
            "inputs": rnd.choice([{"image": image}, {"image": _junk(rnd, image)},
                                  {"content": image, "style": image}, _junk(rnd, image)]),
            "params": rnd.choice([{}, {rnd.choice(PARAMS): _junk(rnd, image)},
                                  _junk(rnd, image)]),
        }  # fmt: skip
        if rnd.random() < 0.2:
            body["seed"] = _junk(rnd, image)
        if rnd.random() < 0.1:
            body.pop(rnd.choice(list(body)))
        raw = json.dumps(body) if rnd.random() > 0.05 else "{not json"
        route = rnd.choice(["/v1/edits", "/v1/fits"])
        r = client.post(route, content=raw, headers={"content-type": "application/json"})
        codes[r.status_code] = codes.get(r.status_code, 0) + 1
        assert r.status_code < 500, (route, raw[:300], r.text[:300])
        if r.status_code >= 400:
            assert set(r.json()["error"]) >= {"code", "message"}, r.text
    assert codes.get(202, 0) > 0 and codes.get(422, 0) > 0, codes  # both kinds were hit


@pytest.mark.parametrize(
    "path",
    ["/v1/jobs/x", "/v1/jobs/" + "a" * 5000, "/v1/jobs/x/outputs/-1",
     "/v1/jobs/x/outputs/99999999999999999999", "/v1/assets/..%2F..", "/v1/jobs?before=-1",
     "/v1/jobs/x?wait=abc", "/v1/jobs/x?wait=-5", "/v1/jobs/x?wait=1e9", "/v1/jobs?limit=1e3"],
)  # fmt: skip
def test_odd_read_paths_get_a_4xx(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert 400 <= r.status_code < 500, (path, r.status_code, r.text[:200])
