"""/healthz, /readyz: up, and ready only with Redis and a live worker."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from contract.keys import HEARTBEAT_KEY
from tests.service.routes.conftest import FakeQueue


def test_ready_only_with_a_fresh_worker_heartbeat(routes: tuple[TestClient, FakeQueue]) -> None:
    client, _ = routes
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["workers"] == 0 and r.json()["redis"] is True
    client.app.state.redis.hset(HEARTBEAT_KEY, "w1", time.time())  # type: ignore[attr-defined]
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["workers"] == 1
