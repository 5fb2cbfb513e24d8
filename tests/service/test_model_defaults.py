"""Per-model editing defaults: checked, merged under the request's values, published."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from contract.keys import HEARTBEAT_KEY, MODELS_KEY
from contract.methods import check_editing_defaults
from contract.models import encode_models
from contract.params import MethodParams
from service.embedded import RedisProcess
from tests.service.conftest import PNG, api_on_redis, model_info

TEXT = model_info("text", conditional=True, editing_defaults={"reconstruct": {"steps": 20}})


def test_defaults_must_be_optional_parameters_within_range() -> None:
    check_editing_defaults({"lam": {"guidance_scale": 3.0}, "inject": {"g": 0.5}})
    for bad, match in [
        ({"nope": {}}, "unknown method"),
        ({"inject": {"colour": 1}}, "no optional parameter 'colour'"),
        ({"direction": {"asset": "a"}}, "no optional parameter 'asset'"),  # required
        ({"inject": {"g": 2.0}}, r"inject\.g: Input should be less than or equal to 1"),
    ]:
        with pytest.raises(ValueError, match=match):
            check_editing_defaults(bad)  # type: ignore[arg-type]


def test_the_models_defaults_apply_and_the_requests_values_win(
    server: RedisProcess, tmp_path: Path
) -> None:
    with api_on_redis(server, tmp_path / "blobs") as client:
        redis = Redis.from_url(server.url)
        redis.hdel(MODELS_KEY, "w")  # the fixture's bare announcement: only ours is listed
        redis.hset(HEARTBEAT_KEY, "w2", time.time())
        redis.hset(MODELS_KEY, "w2", encode_models([TEXT]))
        image = client.post("/v1/images", files={"file": ("a.png", PNG)}).json()["id"]
        queue = Queue("editserve:text", connection=redis, serializer=JSONSerializer)

        def stored(params: dict[str, object]) -> dict[str, object]:
            body = {"model": "text", "method": "reconstruct", "inputs": {"image": image},
                    "params": params}  # fmt: skip
            r = client.post("/v1/edits", json=body)
            assert r.status_code == 202, r.text
            job = queue.fetch_job(r.json()["id"])
            assert job is not None
            return dict(job.args[0]["params"])

        assert stored({})["steps"] == 20  # the model's measured default
        assert stored({"steps": 7})["steps"] == 7  # the request's value wins
        models = {m["name"]: m for m in client.get("/v1/models").json()}
        assert models["text"]["editing_defaults"] == {"reconstruct": {"steps": 20}}
        methods = {m["name"]: m for m in client.get("/v1/methods").json()}
        assert methods["reconstruct"]["model_defaults"] == {"text": {"steps": 20}}
        assert methods["reconstruct"]["defaults"]["steps"] == 50  # the documented default


def test_the_shipped_text_models_defaults_are_valid() -> None:
    from worker.engine.loading import read_editing_defaults

    folder = Path(__file__).resolve().parents[2] / "models" / "shapes32-text"
    defaults = read_editing_defaults(folder)
    check_editing_defaults(defaults)
    assert defaults["lam"]["guidance_scale"] == 3.0


def test_a_plms_lam_fit_on_the_text_model_must_say_eta_0() -> None:
    """The text model's lam default is eta 1, which PLMS cannot take: a request for PLMS
    alone is refused as incompatible (409) naming params.eta; with eta 0 it runs."""
    from contract.methods import METHODS
    from contract.spec import Refused, resolve_params
    from worker.engine.loading import read_editing_defaults

    defaults = read_editing_defaults(
        Path(__file__).resolve().parents[2] / "models" / "shapes32-text"
    )
    request: dict[str, Any] = {
        "name": "n", "neutral": "a circle", "target": "a blue circle", "sampler": "plms"
    }  # fmt: skip

    def resolve(params: dict[str, Any]) -> MethodParams:
        return resolve_params(METHODS["lam"], params, defaults, conditional=True,
                              model="shapes32-text", family="pixel")  # fmt: skip

    with pytest.raises(Refused) as refused:
        resolve(request)
    assert refused.value.where == "params.eta" and refused.value.incompatible
    merged = resolve({**request, "eta": 0})
    assert merged.model_dump()["sampler"] == "plms" and merged.model_dump()["eta"] == 0.0


def test_a_model_default_yields_where_the_request_makes_it_inapplicable() -> None:
    """A model's default t_start (for its signal-leak default) does not refuse a request
    for the direct form: it is left unused, while the request's own t_start would be."""
    from contract.methods import METHODS
    from contract.spec import with_model_defaults

    spec = METHODS["style-generate"].params
    defaults = {"style-generate": {"form": "signal_leak", "t_start": 500}}
    request = {"asset": "a", "form": "direct"}
    merged = spec.model_validate(with_model_defaults("style-generate", request, defaults))
    assert merged.model_dump()["form"] == "direct"
    assert spec.model_validate(request).inapplicable(False) is None
    own = spec.model_validate({"asset": "a", "form": "direct", "t_start": 500})
    found = own.inapplicable(False)
    assert found is not None and found[0] == "t_start"
