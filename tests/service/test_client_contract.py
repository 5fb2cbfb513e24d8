"""The shipped client (``cli.client``, the CLI's) is checked against the document.

Every call it makes is captured (an httpx mock transport) and matched to an operation
of the committed OpenAPI document: its method and path template, every query
parameter and header it sends a declared one, its JSON body valid under the
operation's request schema (an independent JSON Schema validator). A renamed route,
parameter or field in either one fails here; the generated client
(``tests/e2e/test_generated_client.py``) covers the other direction.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
from jsonschema import Draft202012Validator

from cli.client import Client
from service.openapi_doc import PATH

DOC = json.loads(PATH.read_text())
JOB = {"id": "j1", "status": "succeeded", "output_links": []}


def _operation(request: httpx.Request) -> tuple[str, dict[str, Any]]:
    for template, item in DOC["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, request.url.path) and request.method.lower() in item:
            return template, item[request.method.lower()]
    raise AssertionError(f"{request.method} {request.url.path} is not in the document")


def _check(request: httpx.Request) -> None:
    template, op = _operation(request)
    declared = {(p["in"], p["name"].lower()) for p in op.get("parameters", [])}
    for name in request.url.params:
        assert ("query", name.lower()) in declared, (template, name)
    # the API key goes with every call; routes without keys (the catalog) ignore it
    if "idempotency-key" in request.headers:
        assert ("header", "idempotency-key") in declared, template
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        validator = Draft202012Validator({**schema, "components": DOC["components"]})
        errors = [e.message for e in validator.iter_errors(json.loads(request.content))]
        assert not errors, (template, errors)
    elif request.content:
        assert content_type.split(";")[0] in op["requestBody"]["content"], template


def _client(seen: list[str]) -> Client:
    def handler(request: httpx.Request) -> httpx.Response:
        _check(request)
        seen.append(f"{request.method} {_operation(request)[0]}")
        if request.url.path.endswith("/outputs/0"):
            return httpx.Response(200, content=b"\x89PNG", headers={"content-type": "image/png"})
        if request.url.path == "/v1/images":
            return httpx.Response(201, json={"id": "0" * 64})
        if request.url.path in ("/v1/models", "/v1/methods"):
            return httpx.Response(200, json=[])
        return httpx.Response(202 if request.method == "POST" else 200, json=JOB)

    client = Client("http://editserve", api_key="k")
    client.http = httpx.Client(
        base_url="http://editserve",
        headers=client.http.headers,
        transport=httpx.MockTransport(handler),
    )
    return client


def test_every_call_of_the_shipped_client_is_in_the_document(tmp_path: Path) -> None:
    seen: list[str] = []
    client = _client(seen)
    image = tmp_path / "x.png"
    image.write_bytes(b"\x89PNG")
    client.models()
    client.methods()
    upload = client.upload(image)
    edit = {"model": "shapes32", "method": "reconstruct", "inputs": {"image": upload},
            "params": {"steps": 5}}  # fmt: skip
    client.submit(edit, idempotency_key="once")
    fit = {"model": "shapes32", "method": "style-noise",
           "params": {"name": "s", "images": [upload, upload]}}  # fmt: skip
    client.submit(fit, fit=True)
    client.wait("j1")
    client.output("j1", 0)
    assert seen == [
        "GET /v1/models", "GET /v1/methods", "POST /v1/images", "POST /v1/edits",
        "POST /v1/fits", "GET /v1/jobs/{job_id}", "GET /v1/jobs/{job_id}/outputs/{n}",
    ]  # fmt: skip


def test_the_check_refuses_a_body_the_document_does_not_allow(tmp_path: Path) -> None:
    client = _client([])
    bad = {"model": "shapes32", "method": "reconstruct", "inputs": {"image": "0" * 64},
           "params": {"stpes": 5}}  # fmt: skip
    try:
        client.submit(bad)
    except AssertionError as exc:
        assert "stpes" in str(exc)
    else:
        raise AssertionError("a misspelt parameter passed the document's schema")
