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
