from __future__ import annotations

from service.openapi_doc import PATH, render


def test_committed_openapi_matches_the_app() -> None:
    assert PATH.read_text() == render(), "run: python -m service.openapi_doc"


def test_every_route_documents_the_error_shape_or_has_none() -> None:
    import json

    spec = json.loads(render())
    assert "ErrorResponse" in spec["components"]["schemas"]
    edits = spec["paths"]["/v1/edits"]["post"]["responses"]
    assert {"202", "409", "422", "429"} <= set(edits)


def test_the_methods_catalog_and_the_document_agree() -> None:
    """GET /v1/methods and the document publish the same methods, each under the route
    of its kind, with the same parameter schema and the same input roles."""
    import json

    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    doc = json.loads(render())
    schemas = doc["components"]["schemas"]
    methods = TestClient(create_app(Settings(redis_url=""))).get("/v1/methods").json()
    routes = {"edit": "/v1/edits", "fit": "/v1/fits"}
    mapped = {}
    for kind, route in routes.items():
        body = doc["paths"][route]["post"]["requestBody"]["content"]["application/json"]
        mapping = body["schema"]["discriminator"]["mapping"]
        mapped.update({name: (kind, ref.rsplit("/", 1)[1]) for name, ref in mapping.items()})
    assert {m["name"]: m["kind"] for m in methods} == {n: k for n, (k, _) in mapped.items()}
    for m in methods:
        request = schemas[mapped[m["name"]][1]]
        assert request["properties"]["method"]["const"] == m["name"]
        params = request["properties"]["params"]
        ref = (params.get("$ref") or params["allOf"][0]["$ref"]).rsplit("/", 1)[1]
        published = {k: v for k, v in m["params_schema"].items() if k != "$defs"}
        assert schemas[ref] == published, m["name"]
        inputs = request["properties"]["inputs"]
        roles = schemas[(inputs.get("$ref") or inputs["allOf"][0]["$ref"]).rsplit("/", 1)[1]]
        assert sorted(roles["properties"]) == sorted(m["inputs"] + m["optional_inputs"])
        assert sorted(roles.get("required", [])) == sorted(m["inputs"])
