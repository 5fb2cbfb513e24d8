"""With Redis unreachable the API answers 503 in the error shape, with Retry-After."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    settings = Settings(
        blob_dir=tmp_path / "blobs", redis_url=f"redis://127.0.0.1:{_closed_port()}/0"
    )
    # raise_server_exceptions off: what a client sees, not the test's traceback
    return TestClient(create_app(settings), raise_server_exceptions=False)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        (
            "post",
            "/v1/edits",
            {"model": "shapes32", "method": "reconstruct", "inputs": {"image": "0" * 64}},
        ),
        ("get", "/v1/jobs/abc", None),
        ("post", "/v1/jobs/abc/cancel", None),
        ("get", "/v1/assets", None),
        ("get", "/v1/models", None),
    ],
)
def test_store_down_is_a_503_naming_it(
    client: TestClient, method: str, path: str, body: dict[str, object] | None
) -> None:
    r = client.request(method.upper(), path, json=body)
    assert r.status_code == 503, r.text
    assert r.headers["Retry-After"] == "5"
    assert r.json() == {
        "error": {
            "code": "unavailable",
            "message": "the job store (Redis) is unreachable; retry later",
            "field": None,
        }
    }


def test_readyz_says_not_ready(client: TestClient) -> None:
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["redis"] is False
