"""POST /v1/edits and /v1/fits, with the queue faked: what reaches the queue, and what
is refused before it."""

from __future__ import annotations

from fastapi.testclient import TestClient

from contract.jobs import JobKind
from contract.methods.reconstruct import ReconstructParams
from tests.service.conftest import PNG
from tests.service.routes.conftest import FakeQueue, kind_of


def _upload(client: TestClient) -> str:
    r = client.post("/v1/images", files={"file": ("in.png", PNG, "image/png")})
    assert r.status_code == 201, r.text
    image: str = r.json()["id"]
    return image


def test_an_accepted_edit_reaches_the_queue_with_every_value_resolved(
    routes: tuple[TestClient, FakeQueue],
) -> None:
    client, queue = routes
    image = _upload(client)
    body = {"model": "shapes32", "method": "reconstruct", "inputs": {"image": image},
            "params": {"steps": 10}, "seed": 3}  # fmt: skip
    r = client.post("/v1/edits", json=body)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert r.headers["Location"] == f"/v1/jobs/{job_id}"
    payload = queue.jobs[job_id].payload
    assert (payload.method, payload.seed, payload.inputs) == ("reconstruct", 3, {"image": image})
    assert payload.params == ReconstructParams(steps=10).model_dump(mode="json")
    assert kind_of(queue, job_id) is JobKind.EDIT


def test_the_models_defaults_fill_in_and_the_requests_values_win(
    routes: tuple[TestClient, FakeQueue],
) -> None:
    client, queue = routes
    queue.models["shapes32"].info.editing_defaults = {
        "reconstruct": {"inversion": "ddpm", "steps": 20},
        "boundary-edit": {"move_h": False},
    }
    image = _upload(client)
    body = {"model": "shapes32", "method": "reconstruct", "inputs": {"image": image}}
    r = client.post("/v1/edits", json={**body, "params": {"steps": 5}})
    assert r.status_code == 202, r.text
    params = queue.jobs[r.json()["id"]].payload.params
    assert (params["inversion"], params["steps"]) == ("ddpm", 5)
    # valid alone, not with this model's defaults (h_distance needs move_h): 409, no job
    edit = {"model": "shapes32", "method": "boundary-edit", "inputs": {"image": image},
            "params": {"asset": "a1", "h_distance": 1.0}}  # fmt: skip
    r = client.post("/v1/edits", json=edit)
    assert r.status_code == 409 and r.json()["error"]["field"] == "params.h_distance", r.text
    # a value the model's defaults would leave unused (refine: DDIM inversion only)
    r = client.post("/v1/edits", json={**body, "params": {"refine": 2}})
    assert r.status_code == 409 and r.json()["error"]["field"] == "params.refine", r.text
    assert "with model shapes32's defaults" in r.json()["error"]["message"]
    ok = client.post("/v1/edits", json={**body, "params": {"refine": 2, "inversion": "ddim"}})
    assert ok.status_code == 202, ok.text
    assert len(queue.jobs) == 2


def test_refusals_name_the_field_and_queue_nothing(routes: tuple[TestClient, FakeQueue]) -> None:
    client, queue = routes
    image = _upload(client)
    base = {"model": "shapes32", "method": "reconstruct", "inputs": {"image": image}}
    cases = [
        ({**base, "params": {"steps": 0}}, 422, "params.steps"),
        ({**base, "model": "nope"}, 404, "model"),
        ({**base, "inputs": {"image": "0" * 64}}, 404, "inputs.image"),
        ({**base, "method": "style-noise"}, 422, "method"),  # a fit is no edit
        ({**base, "params": {"prompt": "a red circle"}}, 409, "params.prompt"),  # unconditional
    ]
    for body, status, where in cases:
        r = client.post("/v1/edits", json=body)
        assert r.status_code == status and r.json()["error"]["field"] == where, (body, r.text)
    assert queue.jobs == {}


def test_a_full_queue_is_a_429_with_retry_after(routes: tuple[TestClient, FakeQueue]) -> None:
    client, queue = routes
    queue.depth_now = 10**6
    image = _upload(client)
    body = {"model": "shapes32", "method": "reconstruct", "inputs": {"image": image}}
    r = client.post("/v1/edits", json=body)
    assert r.status_code == 429 and r.headers["Retry-After"] == "5"
    assert queue.jobs == {}


def test_an_idempotent_retry_answers_as_the_first_and_queues_once(
    routes: tuple[TestClient, FakeQueue],
) -> None:
    client, queue = routes
    image = _upload(client)
    body = {"model": "shapes32", "method": "reconstruct", "inputs": {"image": image}}
    headers = {"Idempotency-Key": "k1"}
    first = client.post("/v1/edits", json=body, headers=headers)
    again = client.post("/v1/edits", json=body, headers=headers)
    assert first.json()["id"] == again.json()["id"] and len(queue.jobs) == 1
    assert again.headers["Idempotent-Replayed"] == "true"
    other = client.post("/v1/edits", json={**body, "seed": 9}, headers=headers)
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_conflict"


def test_a_fit_goes_to_the_fit_route_only(routes: tuple[TestClient, FakeQueue]) -> None:
    client, queue = routes
    images = [_upload(client)] * 2
    body = {"model": "shapes32", "method": "style-noise", "params": {"name": "s", "images": images}}
    assert client.post("/v1/edits", json=body).status_code == 422
    r = client.post("/v1/fits", json=body)
    assert r.status_code == 202, r.text
    assert kind_of(queue, r.json()["id"]) is JobKind.FIT


def test_a_value_an_input_leaves_unused_is_refused(routes: tuple[TestClient, FakeQueue]) -> None:
    """lam's ``seeds`` picks the sampled starts; with inputs.image the fit works on that
    image, so a request giving both is a 422 naming the param, and queues nothing."""
    client, queue = routes
    queue.models["shapes32"].info.conditional = True
    queue.models["shapes32"].info.editing_defaults = {"lam": {"seeds": 4}}
    image = _upload(client)
    params = {"name": "l", "neutral": "a circle", "target": "a red circle"}
    body = {"model": "shapes32", "method": "lam", "params": params}
    r = client.post("/v1/fits", json={**body, "inputs": {"image": image},
                                      "params": {**params, "seeds": 2}})  # fmt: skip
    assert r.status_code == 422 and r.json()["error"]["field"] == "params.seeds", r.text
    assert not queue.jobs
    # the model's default yields to the image (the worker reads it only on seeds)
    r = client.post("/v1/fits", json={**body, "inputs": {"image": image}})
    assert r.status_code == 202, r.text
    r = client.post("/v1/fits", json={**body, "params": {**params, "seeds": 2}})
    assert r.status_code == 202, r.text
    assert queue.jobs[r.json()["id"]].payload.params["seeds"] == 2
