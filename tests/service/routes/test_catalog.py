"""GET /v1/models and /v1/methods, with the queue faked."""

from __future__ import annotations

from fastapi.testclient import TestClient

from contract.methods import METHODS
from service.jobs import HeldModel
from tests.service.conftest import model_info
from tests.service.routes.conftest import FakeQueue


def test_models_are_what_live_workers_announce(routes: tuple[TestClient, FakeQueue]) -> None:
    client, queue = routes
    queue.models["text"] = HeldModel(info=model_info("text", conditional=True), workers=2)
    models = {m["name"]: m for m in client.get("/v1/models").json()}
    assert set(models) == {"shapes32", "text"}
    assert models["text"]["workers"] == 2 and models["text"]["conditional"] is True
    assert models["shapes32"]["sample_shape"] == [3, 32, 32]


def test_methods_are_every_registered_spec(routes: tuple[TestClient, FakeQueue]) -> None:
    client, _ = routes
    listed = {m["name"]: m for m in client.get("/v1/methods").json()}
    assert set(listed) == set(METHODS)
    assert listed["inject"]["inputs"] == ["content", "style"]
    assert "default" not in listed["inject"]["params_schema"]["properties"]["g"]
