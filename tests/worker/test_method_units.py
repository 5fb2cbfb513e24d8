"""A method is one unit: its spec (contract), its handler (worker), its asset codec."""

from __future__ import annotations

import pytest
import torch

from contract.jobs import JobKind, JobPayload
from contract.methods import METHODS
from contract.methods.boundaries import BoundaryEditParams
from worker.batching import batch_key
from worker.engine.methods.boundaries import Boundary, BoundaryAsset
from worker.engine.methods.directions import DirectionsAsset
from worker.engine.methods.mixing import LamAsset
from worker.engine.methods.style_noise import StyleNoise, StyleNoiseAsset
from worker.methods import HANDLERS
from worker.methods.handler import Batch, BatchFieldError, PreparedJob


def test_every_spec_has_a_handler_and_every_handler_a_spec() -> None:
    assert sorted(METHODS) == sorted(HANDLERS)
    for name, handler in HANDLERS.items():
        assert handler.spec is METHODS[name]
        assert handler.params is handler.spec.params, name  # the handler's type is the spec's


def test_batch_fields_are_fields_of_the_method_and_fits_do_not_batch() -> None:
    for name, handler in HANDLERS.items():
        if handler.spec.kind is JobKind.FIT:
            assert handler.batch_fields is None, name
            assert batch_key(name, {}) is None
            continue
        assert handler.batch_fields is not None, name
        unknown = set(handler.batch_fields) - set(handler.params.model_fields)
        assert not unknown, f"{name}: batch fields {unknown} are not parameters"


def test_batch_keys_follow_batch_fields_only() -> None:
    base = batch_key("boundary-edit", {"asset": "a", "strength": 1.0})
    assert base == batch_key("boundary-edit", {"asset": "a", "strength": 1.0, "fit": "crop"})
    # strength changes the distance of every job: jobs that differ in it run apart
    assert base != batch_key("boundary-edit", {"asset": "a", "strength": 2.0})
    # a field left out reads as its default
    assert batch_key("reconstruct", {}) == batch_key("reconstruct", {"steps": 50})


def _job(params: BoundaryEditParams) -> PreparedJob[BoundaryEditParams]:
    payload = JobPayload(id="j", kind=JobKind.EDIT, model="m", method="boundary-edit")
    return PreparedJob(payload=payload, params=params, images={})


def test_shared_params_refuse_a_per_job_field() -> None:
    jobs = [_job(BoundaryEditParams(asset="a", fit="crop"))]
    batch = Batch.of(jobs, ("asset",))
    assert batch.shared.asset == "a"
    with pytest.raises(BatchFieldError, match=r"BoundaryEditParams\.fit is not a batch field"):
        _ = batch.shared.fit
    assert Batch.of(jobs, None).shared.fit == "crop"  # a batch of one shares everything


def test_asset_codecs_round_trip() -> None:
    g = torch.Generator().manual_seed(0)
    dirs = {t: torch.randn(2, 4, 2, 2, generator=g) for t in (0, 500, 999)}
    d = DirectionsAsset.from_safetensors(DirectionsAsset("pca", "m", [0, 500, 999], dirs, 1)
                                         .to_safetensors())  # fmt: skip
    assert (d.kind, d.model, d.grid, d.refine, d.components) == ("pca", "m", [0, 500, 999], 1, 2)
    assert all(torch.equal(d.directions[t], dirs[t]) for t in dirs)

    bx = Boundary(torch.randn(3, 4, 4, generator=g), 0.25, 0.9, 0.95)
    bh = Boundary(torch.randn(8, 2, 2, generator=g), -1.5, 0.8, 0.85)
    b = BoundaryAsset.from_safetensors(
        BoundaryAsset("m", [0, 250, 500], bx, bh, 3.5, 0.75, 2).to_safetensors()
    )
    assert (b.grid, b.scale_x, b.scale_h, b.refine) == ([0, 250, 500], 3.5, 0.75, 2)
    assert torch.equal(b.x.normal, bx.normal) and b.h.offset == -1.5
    old = BoundaryAsset("m", [0, 500], bx, bh, None, None, 0).to_safetensors()
    assert BoundaryAsset.from_safetensors(old).scale_x is None  # an asset from before scales

    lam = torch.linspace(0, 1, 5)
    stored = LamAsset("m", [0, 1, 2, 3, 4], lam, "a red circle", "a blue circle", 3.0, "plms")
    m = LamAsset.from_safetensors(stored.to_safetensors())
    assert (m.neutral, m.target, m.guidance_scale, m.sampler) == (
        "a red circle",
        "a blue circle",
        3.0,
        "plms",
    )
    assert torch.equal(m.lam, lam) and m.clip_x0 is False
    clipped = LamAsset("m", [0, 1], torch.ones(2), "a", "b", 1.0, "ddim", clip_x0=True, eta=1.0)
    back = LamAsset.from_safetensors(clipped.to_safetensors())
    assert back.clip_x0 is True and back.eta == 1.0 and m.eta == 0.0

    style = StyleNoise(torch.zeros(3, 4, 4), torch.ones(3, 4, 4), count=5)
    s = StyleNoiseAsset.from_safetensors(StyleNoiseAsset("m", style).to_safetensors())
    assert s.model == "m" and s.style.count == 5 and torch.equal(s.style.var, style.var)


def test_a_codec_refuses_bytes_that_are_no_asset() -> None:
    from worker.engine.errors import InputError

    with pytest.raises(InputError, match="not a lam asset"):
        LamAsset.from_safetensors(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    whole = LamAsset("m", [0, 1], torch.ones(2), "a", "b", 1.0, "ddim").to_safetensors()
    with pytest.raises(InputError, match="not a lam asset"):  # cut short: tensors missing
        LamAsset.from_safetensors(whole[:-3])
