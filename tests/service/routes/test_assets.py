"""GET and DELETE /v1/assets: the index the worker's fits write, read by the API."""

from __future__ import annotations

from fastapi.testclient import TestClient

from store.assets import AssetIndex
from tests.service.routes.conftest import FakeQueue


def test_an_asset_is_listed_read_and_deleted(routes: tuple[TestClient, FakeQueue]) -> None:
    client, _ = routes
    redis = client.app.state.redis  # type: ignore[attr-defined]
    made = AssetIndex(redis).create(name="red", model="shapes32", method="directions",
                                    blob="b" * 64, params={"k": 2}, metrics={})  # fmt: skip
    listed = client.get("/v1/assets").json()
    assert [a["id"] for a in listed] == [made["id"]]
    one = client.get(f"/v1/assets/{made['id']}").json()
    assert (one["name"], one["method"], one["version"]) == ("red", "directions", 1)
    assert client.delete(f"/v1/assets/{made['id']}").status_code == 204
    r = client.get(f"/v1/assets/{made['id']}")
    assert r.status_code == 404 and r.json()["error"]["field"] == "id"
