"""The executor on a tiny model: a batch of jobs, a bad job failing alone, method A end to end."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch
from PIL import Image

from contract.jobs import ErrorCode, JobKind, JobPayload
from store.blobs import LocalBlobStore
from worker.engine import Denoiser
from worker.engine.classifier import AttributeClassifier
from worker.engine.methods.directions import supervised_directions
from worker.engine.methods.inject import content_trajectory
from worker.engine.methods.mixing import reference_init
from worker.engine.schedule import NoiseSchedule, timestep_grid
from worker.executor import JobFailed, JobOutput, PreparedJob, RunContext, prepare, run_batch
from worker.inversion_cache import InversionCache
from worker.methods.handler import AssetOutput


def _blob(store: LocalBlobStore, seed: int, size: int = 16) -> str:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return store.put(buf.getvalue())


def _payload(method: str, inputs: dict[str, str], **params: object) -> JobPayload:
    return JobPayload(
        id="j", kind=JobKind.EDIT, model="tiny", method=method, params=params, inputs=inputs
    )


def test_inject_batch_gives_one_png_per_job(pixel: Denoiser, tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    jobs = [
        prepare(_payload("inject", {"content": _blob(store, i), "style": _blob(store, 10 + i)},
                         steps=6, t_edit=300, t_boost=100), pixel, store)
        for i in range(2)
    ]  # fmt: skip
    seen: list[tuple[int, int]] = []
    outputs = run_batch(pixel, jobs, lambda i, n, *_: seen.append((i, n)))
    assert len(outputs) == 2
    for out in outputs:
        assert Image.open(io.BytesIO(out.images[0])).size == (16, 16)
    assert seen[-1][0] == seen[-1][1] == 3 * 6 - 2
    assert pixel.hooks.active == []


def test_prepare_refuses_with_the_field_named(pixel: Denoiser, tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    content = _blob(store, 0)
    with pytest.raises(JobFailed, match=r"inputs\.style: missing") as missing:
        prepare(_payload("inject", {"content": content}), pixel, store)
    assert missing.value.code == ErrorCode.INVALID_INPUT
    with pytest.raises(JobFailed, match=r"params\.g"):
        prepare(_payload("inject", {"content": content, "style": content}, g=2), pixel, store)
    with pytest.raises(JobFailed, match="takes 16x16 images, got 24x24"):
        prepare(_payload("reconstruct", {"image": _blob(store, 1, size=24)}), pixel, store)


def test_inject_is_for_pixel_models(cond: Denoiser, tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    blob = _blob(store, 0)
    with pytest.raises(JobFailed, match="needs a pixel model"):
        prepare(_payload("inject", {"content": blob, "style": blob}), cond, store)


def test_refined_and_plain_inversions_are_cached_apart(pixel: Denoiser, tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    image = _blob(store, 4)
    cache = InversionCache()

    def run(refine: int) -> JobOutput:
        job = prepare(_payload("reconstruct", {"image": image}, steps=5, refine=refine), pixel,
                      store)  # fmt: skip
        return run_batch(pixel, [job], lambda *_: None, cache)[0]

    plain, refined = run(0), run(1)
    assert not plain.metrics["inversion_cached"] and not refined.metrics["inversion_cached"]
    assert plain.images != refined.images
    assert run(1).metrics["inversion_cached"] and run(0).metrics["inversion_cached"]


def test_a_worker_with_an_empty_memory_cache_reads_the_shared_folder(
    pixel: Denoiser, tmp_path: Path
) -> None:
    # an InversionCache with nothing in memory has len() 0: it must still be consulted
    store = LocalBlobStore(tmp_path)
    job = prepare(_payload("reconstruct", {"image": _blob(store, 3)}, steps=5), pixel, store)
    first = run_batch(pixel, [job], lambda *_: None, InversionCache(folder=tmp_path / "inv"))
    other_worker = InversionCache(folder=tmp_path / "inv")
    second = run_batch(pixel, [job], lambda *_: None, other_worker)
    assert first[0].metrics["inversion_cached"] is False
    assert second[0].metrics["inversion_cached"] is True
    assert other_worker.hits == 1 and first[0].images == second[0].images


class _Assets:
    """AssetIndex's read side, in memory: what the handlers use."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, object]] = {}

    def add(
        self, store: LocalBlobStore, output: JobOutput, model: str, owner: str | None = None
    ) -> str:
        assert output.asset is not None
        asset_id = f"a{len(self.records)}"
        blob = store.put(output.asset.data)
        self.records[asset_id] = {"id": asset_id, "model": model, "method": "directions",
                                  "blob": blob, "owner": owner}  # fmt: skip
        return asset_id

    def get(self, asset_id: str) -> dict[str, object] | None:
        return self.records.get(asset_id)


def _fit(pixel: Denoiser, store: LocalBlobStore, ctx: RunContext, **params: object) -> JobOutput:
    inputs = cast(dict[str, str], params.pop("inputs", {}))
    payload = JobPayload(id="f", kind=JobKind.FIT, model="tiny", method="directions",
                         params={"name": "d", "steps": 4, **params}, inputs=inputs)  # fmt: skip
    seen: list[tuple[int, int]] = []
    out = run_batch(pixel, [prepare(payload, pixel, store)], lambda i, n, *_: seen.append((i, n)),
                    context=ctx)[0]  # fmt: skip
    assert seen and seen[-1][0] == seen[-1][1]
    return out


def test_direction_fits_make_assets_and_edits_apply_them(pixel: Denoiser, tmp_path: Path) -> None:
    torch.manual_seed(0)  # the untrained classifier's weights, whatever ran before
    store = LocalBlobStore(tmp_path)
    assets = _Assets()
    factors = {"colour": ["red", "blue"], "shape": ["circle", "square"]}
    clf = AttributeClassifier(factors, width=8, image_size=16).eval()
    ctx = RunContext(blobs=store, assets=assets, classifier=clf)
    h_shape = pixel.h_shape

    pca = _fit(pixel, store, ctx, kind="pca", samples=16, k=3)
    assert pca.asset is not None and pca.images == []
    grid = json.loads(pca.asset.meta["grid"])
    assert len(grid) == 4 and all(pca.asset.tensors[f"t{t}"].shape == (3, *h_shape) for t in grid)
    pos, neg = [_blob(store, 1), _blob(store, 2)], [_blob(store, 3)]
    labelled = _fit(pixel, store, ctx, kind="supervised", positives=pos, negatives=neg)
    assert labelled.metrics["positives"] == 2 and labelled.asset is not None
    judged = _fit(pixel, store, ctx, kind="supervised", factor="colour", value="red", samples=16,
                  top_k=4)  # fmt: skip
    assert judged.metrics["positives"] == judged.metrics["negatives"] == 4
    assert judged.metrics["score_positives"] >= judged.metrics["score_negatives"]
    balanced = _fit(pixel, store, ctx, kind="supervised", factor="colour", value="red",
                    samples=16, top_k=4, balance=True)  # fmt: skip
    assert balanced.metrics["positives"] == balanced.metrics["negatives"] <= 4
    jac = _fit(pixel, store, ctx, kind="jacobian", k=2, iters=5, inputs={"image": _blob(store, 4)})
    assert jac.asset is not None and len(jac.metrics["sigma_top_step"]) == 2

    # disentangled: the new directions are orthogonal to every direction of both other
    # assets at once (one projection after the other would leave them orthogonal to the last)
    pca_id = assets.add(store, pca, "tiny-pixel")
    labelled_id = assets.add(store, labelled, "tiny-pixel")
    clean = _fit(pixel, store, ctx, kind="supervised", factor="colour", value="red", samples=16,
                 top_k=4, project_out=[pca_id, labelled_id])  # fmt: skip
    assert clean.asset is not None
    for t in grid:
        others = torch.cat([pca.asset.tensors[f"t{t}"], labelled.asset.tensors[f"t{t}"]])
        others = others.reshape(4, -1)
        d = clean.asset.tensors[f"t{t}"].reshape(1, -1)
        assert (others @ d.T).abs().max() < 1e-4 * others.norm() * d.norm()

    image = _blob(store, 5)

    def edit(asset: str, **params: object) -> bytes:
        payload = _payload("direction", {"image": image}, asset=asset, **params)
        return run_batch(pixel, [prepare(payload, pixel, store)], lambda *_: None,
                         context=ctx)[0].images[0]  # fmt: skip

    plain = edit(pca_id, scale=0.0)
    assert edit(pca_id, scale=5.0, component=1) != plain
    assert edit(pca_id, scale=5.0, t_edit=1000) == plain  # no step has t >= 1000
    with pytest.raises(JobFailed, match="the asset has 3 directions"):
        edit(pca_id, component=3)
    with pytest.raises(JobFailed, match="no directions asset"):
        edit("nope")
    foreign = assets.add(store, pca, "tiny-pixel", owner="someone-else")
    with pytest.raises(JobFailed, match="no directions asset"):
        edit(foreign)


def test_balanced_pairs_match_every_other_factor_and_take_the_strongest() -> None:
    from worker.methods.directions import balanced_pairs

    # the target's score and two other factors; the positives lean to shape 1, as a
    # classifier's top-K of "large" leaned to triangles on the shipped model
    score = torch.tensor([0.99, 0.95, 0.9, 0.8, 0.6, 0.3, 0.2, 0.1, 0.05, 0.01])
    others = torch.tensor(
        [[1, 0], [1, 0], [1, 1], [0, 0], [1, 0], [1, 0], [0, 0], [0, 0], [1, 1], [0, 1]]
    )
    pos, neg = balanced_pairs(score, others, top_k=8)
    assert len(pos) == len(neg)
    assert torch.equal(others[pos], others[neg])  # each pair agrees on the other factors
    assert bool((score[pos] >= 0.5).all()) and bool((score[neg] < 0.5).all())
    # 0.99 takes the only [1, 0] negative (0.3); 0.95 and 0.6 find none; 0.9 takes 0.05;
    # 0.8 takes the lowest [0, 0] negative (0.1)
    assert pos.tolist() == [0, 2, 3] and neg.tolist() == [5, 8, 7]
    assert balanced_pairs(score, others, top_k=1)[0].tolist() == [0]


def test_labelled_and_jacobian_fits_invert_with_the_given_refine(
    pixel: Denoiser, tmp_path: Path
) -> None:
    """The fit inverts as the edits do (refine 1 by default); it used plain DDIM always."""
    store = LocalBlobStore(tmp_path)
    ctx = RunContext(blobs=store, assets=_Assets())
    labels = {"positives": [_blob(store, 1), _blob(store, 2)], "negatives": [_blob(store, 3)]}
    payload = JobPayload(id="f", kind=JobKind.FIT, model="tiny", method="directions",
                         params={"name": "d", "steps": 4, "kind": "supervised", **labels},
                         inputs={})  # fmt: skip
    job = prepare(payload, pixel, store)
    assert job.params.refine == 1
    default = run_batch(pixel, [job], lambda *_: None, context=ctx)[0].asset
    assert default is not None and default.meta["refine"] == "1"
    grid = json.loads(default.meta["grid"])
    fits = {r: _fit(pixel, store, ctx, kind="supervised", refine=r, **labels) for r in (0, 2)}
    pos = content_trajectory(pixel, pixel.encode(job.images["positives"]), grid, refine=2)
    neg = content_trajectory(pixel, pixel.encode(job.images["negatives"]), grid, refine=2)
    want = supervised_directions(pos.h, neg.h)
    for t in grid:
        got = {r: f.asset.tensors[f"t{t}"][0] for r, f in fits.items() if f.asset is not None}
        torch.testing.assert_close(got[2], want[t].to(got[2].dtype))
        # the first step's h is read on the image itself, before any inversion step
        assert torch.equal(got[0], got[2]) == (t == grid[0])
    assert fits[2].asset is not None and fits[2].asset.meta["refine"] == "2"
    image = {"image": _blob(store, 4)}
    jac = {r: _fit(pixel, store, ctx, kind="jacobian", k=1, iters=3, refine=r, inputs=image)
           for r in (0, 2)}  # fmt: skip
    assert jac[0].metrics["sigma_top_step"] != jac[2].metrics["sigma_top_step"]


def test_direction_fit_refusals_name_the_field(pixel: Denoiser, tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    ctx = RunContext(blobs=store, assets=_Assets())
    with pytest.raises(JobFailed, match=r"inputs\.image: missing"):
        _fit(pixel, store, ctx, kind="jacobian")
    with pytest.raises(JobFailed, match=r"params\.negatives: labelled supervision needs both"):
        _fit(pixel, store, ctx, kind="supervised", positives=[_blob(store, 1)])
    with pytest.raises(JobFailed, match="no classifier"):
        _fit(pixel, store, ctx, kind="supervised", factor="colour", value="red")


def _one(
    denoiser: Denoiser, payload: JobPayload, store: LocalBlobStore, ctx: RunContext
) -> JobOutput:
    return run_batch(denoiser, [prepare(payload, denoiser, store)], lambda *_: None,
                     context=ctx)[0]  # fmt: skip


@pytest.mark.parametrize("family", ["pixel", "cond"])
def test_style_noise_fit_then_generate(
    family: str, pixel: Denoiser, cond: Denoiser, tmp_path: Path
) -> None:
    model = pixel if family == "pixel" else cond
    store = LocalBlobStore(tmp_path)
    assets = _Assets()
    ctx = RunContext(blobs=store, assets=assets)
    images = [_blob(store, i) for i in range(3)]
    fit = JobPayload(id="f", kind=JobKind.FIT, model="m", method="style-noise",
                     params={"name": "s", "images": images})  # fmt: skip
    out = _one(model, fit, store, ctx)
    assert out.asset is not None and out.metrics["images"] == 3
    assert out.asset.tensors["mean"].shape == model.sample_shape
    asset = f"a{len(assets.records)}"
    assets.records[asset] = {"id": asset, "model": model.name, "method": "style-noise",
                             "blob": store.put(out.asset.data), "owner": None}  # fmt: skip

    def payload(seed: int, **params: object) -> JobPayload:
        return JobPayload(id="g", kind=JobKind.EDIT, model="m", method="style-generate",
                          params={"asset": asset, "steps": 4, **params}, seed=seed)  # fmt: skip

    def generate(seed: int, **params: object) -> bytes:
        return _one(model, payload(seed, **params), store, ctx).images[0]

    prompt = {"prompt": "a red circle", "guidance_scale": 2.0} if family == "cond" else {}
    first = generate(1, **prompt)
    assert Image.open(io.BytesIO(first)).size == model.image_shape[1:]
    assert generate(1, **prompt) == first and generate(2, **prompt) != first
    leak = generate(1, form="signal_leak", **prompt)
    assert leak != first
    assert generate(1, form="signal_leak", t_start=400, **prompt) not in (leak, first)
    schedule = NoiseSchedule.from_scheduler_config({"num_train_timesteps": 100})
    short = Denoiser(name=model.name, unet=model.unet, schedule=schedule,
                     text_encoder=model.text_encoder, tokenizer=model.tokenizer)  # fmt: skip
    with pytest.raises(JobFailed, match=r"params\.t_start: .* 0 to 99, got 400"):
        _one(short, payload(1, form="signal_leak", t_start=400, **prompt), store, ctx)
    with pytest.raises(JobFailed, match="no style-noise asset"):
        generate(1, asset="nope")
    one_image = fit.model_copy(update={"params": {"name": "s", "images": images[:1]}})
    with pytest.raises(JobFailed, match=r"params\.images"):
        _one(model, one_image, store, ctx)


def test_boundary_fit_then_edit_lands_at_the_distance(pixel: Denoiser, tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    assets = _Assets()
    factors = {"colour": ["red", "blue"]}
    clf = AttributeClassifier(factors, width=8, image_size=16).eval()
    ctx = RunContext(blobs=store, assets=assets, classifier=clf)
    pos = [_blob(store, i) for i in range(6)]
    neg = [_blob(store, 10 + i) for i in range(6)]

    def fit(**params: object) -> JobOutput:
        payload = JobPayload(id="b", kind=JobKind.FIT, model="m", method="boundary",
                             params={"name": "b", "steps": 4, **params})  # fmt: skip
        return _one(pixel, payload, store, ctx)

    labelled = fit(positives=pos, negatives=neg, t0=300, held_out=0.0)
    assert labelled.asset is not None and labelled.metrics["t0"] == 300
    assert labelled.metrics["train_accuracy_x"] == 1.0  # 12 points in 768 dimensions
    assert labelled.asset.tensors["normal_x"].shape == pixel.sample_shape
    meta = labelled.asset.meta  # the edit inverts as the fit did, and scales h's distance
    assert meta["refine"] == "1" and float(meta["scale_x"]) > 0 and float(meta["scale_h"]) > 0
    searched = fit(factor="colour", value="red", samples=16)
    assert searched.metrics["t0_searched"] is True and 0 < searched.metrics["t0"] <= 999

    asset = "a0"
    blob = store.put(labelled.asset.data)
    assets.records[asset] = {"id": asset, "model": pixel.name, "method": "boundary",
                             "blob": blob, "owner": None}  # fmt: skip
    image = _blob(store, 20)

    def edit(**params: object) -> JobOutput:
        payload = _payload("boundary-edit", {"image": image}, **{"asset": asset, **params})
        return _one(pixel, payload, store, ctx)

    near = edit(distance=0.0, eta=0.0)
    far = edit(distance=50.0, eta=0.0)
    assert near.images[0] != far.images[0]
    assert near.metrics["distance_before"] == far.metrics["distance_before"]
    # no distance: strength (2 by default) times the fit's median |distance| of x
    scale = float(meta["scale_x"])
    assert edit(eta=0.0).metrics["distance"] == pytest.approx(2 * scale, abs=1e-4)
    by_strength = edit(strength=3.0, eta=0.0)
    assert by_strength.metrics["distance"] == pytest.approx(3 * scale, abs=1e-4)
    assert by_strength.images == edit(distance=3 * scale, eta=0.0).images
    assert searched.metrics["distance_scale_x"] > 0
    with pytest.raises(JobFailed, match="no boundary asset"):
        edit(distance=1.0, asset="nope")


def test_inject_reuses_cached_trajectories_and_shares_style_inversions(
    pixel: Denoiser, tmp_path: Path
) -> None:
    store = LocalBlobStore(tmp_path)
    content, style = _blob(store, 30), _blob(store, 31)
    cache = InversionCache(folder=tmp_path / "inv")
    job = prepare(_payload("inject", {"content": content, "style": style}, steps=6,
                           grid="leading"), pixel, store)  # fmt: skip
    first = run_batch(pixel, [job], lambda *_: None, cache)[0]
    again = run_batch(pixel, [job], lambda *_: None, InversionCache(folder=tmp_path / "inv"))[0]
    assert first.metrics["inversion_cached"] is False and again.metrics["inversion_cached"] is True
    assert first.images == again.images
    # the style's DDIM inversion is the one a reconstruct of that image with these steps uses
    rec = prepare(_payload("reconstruct", {"image": style}, steps=6), pixel, store)
    assert run_batch(pixel, [rec], lambda *_: None, cache)[0].metrics["inversion_cached"]


def test_lam_fit_then_mix_on_seeds_and_real_images(cond: Denoiser, tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    assets = _Assets()
    clf = AttributeClassifier({"colour": ["red", "blue"]}, width=8, image_size=16).eval()
    ctx = RunContext(blobs=store, assets=assets, classifier=clf)
    fit = JobPayload(id="l", kind=JobKind.FIT, model="m", method="lam",
                     params={"name": "red", "neutral": "a circle", "target": "a red circle",
                             "steps": 3, "epochs": 2})  # fmt: skip
    out = _one(cond, fit, store, ctx)
    assert out.asset is not None and out.asset.tensors["lam"].shape == (3,)
    assert len(out.images) == 1 and "loss_last" in out.metrics
    blob = store.put(out.asset.data)
    assets.records["a0"] = {"id": "a0", "model": cond.name, "method": "lam", "blob": blob,
                            "owner": None}  # fmt: skip

    def mix(seed: int, inputs: dict[str, str]) -> bytes:
        payload = JobPayload(id="m", kind=JobKind.EDIT, model="m", method="mix", inputs=inputs,
                             params={"asset": "a0"}, seed=seed)  # fmt: skip
        return _one(cond, payload, store, ctx).images[0]

    assert mix(1, {}) == mix(1, {}) != mix(2, {})
    real = mix(1, {"image": _blob(store, 40)})
    assert Image.open(io.BytesIO(real)).size == (16, 16)
    with pytest.raises(JobFailed, match="needs a text-conditioned model"):
        _one(pixel_model_for_refusal(tmp_path), fit, store, ctx)


def test_a_lam_fit_on_several_seeds_learns_one_lam_for_all(cond: Denoiser, tmp_path: Path) -> None:
    """``seeds`` 2 from seed 5: rows of seeds 5 and 6, one lam from their mean loss."""
    from worker.engine.methods.mixing import optimise_lam
    from worker.methods.mixing import scorer

    store = LocalBlobStore(tmp_path)
    clf = AttributeClassifier({"colour": ["red", "blue"]}, width=8, image_size=16).eval()
    ctx = RunContext(blobs=store, assets=_Assets(), classifier=clf)
    params = {"name": "red", "neutral": "a circle", "target": "a red circle", "steps": 3,
              "epochs": 2, "seeds": 2}  # fmt: skip
    fit = JobPayload(id="l", kind=JobKind.FIT, model="m", method="lam", params=params, seed=5)
    out = _one(cond, fit, store, ctx)
    assert out.asset is not None and len(out.images) == 2
    cpu = torch.device("cpu")
    rows = [cond.noise((1, *cond.sample_shape), torch.Generator().manual_seed(s), cpu)
            for s in (5, 6)]  # fmt: skip
    grid = timestep_grid(3, cond.num_train_timesteps)
    both = optimise_lam(cond, torch.cat(rows), grid, "a circle", "a red circle",
                        scorer(ctx, "classifier"), epochs=2)  # fmt: skip
    one = optimise_lam(cond, rows[0], grid, "a circle", "a red circle",
                       scorer(ctx, "classifier"), epochs=2)  # fmt: skip
    # the job's lam is the two-row fit's (the same computation, so to float rounding of
    # the same operations), not the one-seed fit's
    assert torch.allclose(out.asset.tensors["lam"], both.lam, atol=1e-6)
    assert not torch.allclose(both.lam, one.lam, atol=1e-6)


def test_lam_fit_with_the_clip_scorer_and_its_refusal(cond: Denoiser, tmp_path: Path) -> None:
    from tests.engine.tiny_models import save_tiny_clip
    from worker.engine.methods.mixing import ClipScorer

    store = LocalBlobStore(tmp_path)
    params = {"name": "red", "neutral": "a circle", "target": "a red circle", "steps": 3,
              "epochs": 2, "scorer": "clip"}  # fmt: skip
    fit = JobPayload(id="l", kind=JobKind.FIT, model="m", method="lam", params=params)
    with pytest.raises(JobFailed, match=r"params\.scorer: this worker has no CLIP folder"):
        _one(cond, fit, store, RunContext(blobs=store, assets=_Assets()))
    ctx = RunContext(blobs=store, assets=_Assets(), clip=ClipScorer(save_tiny_clip(tmp_path / "c")))
    out = _one(cond, fit, store, ctx)
    assert out.asset is not None and out.asset.params["scorer"] == "clip"
    assert not torch.equal(out.asset.tensors["lam"], reference_init(3))


def pixel_model_for_refusal(tmp_path: Path) -> Denoiser:
    from tests.engine.tiny_models import save_pixel_model
    from worker.engine import load_denoiser

    return load_denoiser(save_pixel_model(tmp_path / "px"), device="cpu", dtype="float32")


def test_jacobian_directions_agree_in_sign_across_steps(pixel: Denoiser, tmp_path: Path) -> None:
    """Each step's power iteration starts at a random vector, so its u comes with an
    arbitrary sign; stored unaligned, a direction's per-step contributions cancel
    (8 seeds gave signs [1, -1, 1, 1, 1, 1, -1, -1]). Every step must agree with the top's."""
    store = LocalBlobStore(tmp_path)
    ctx = RunContext(blobs=store, assets=_Assets())
    image = {"image": _blob(store, 4)}
    out = _fit(pixel, store, ctx, kind="jacobian", k=1, iters=8, steps=8, inputs=image)
    assert out.asset is not None
    grid = json.loads(out.asset.meta["grid"])
    top = out.asset.tensors[f"t{grid[-1]}"].flatten()
    dots = [float(out.asset.tensors[f"t{t}"].flatten() @ top) for t in grid]
    assert all(d > 0 for d in dots), dots

    one = _fit(pixel, store, ctx, kind="jacobian", k=1, iters=8, steps=8, inputs=image,
               jacobian_apply="one_step", jacobian_t=grid[3])  # fmt: skip
    assert one.asset is not None
    source = one.asset.tensors[f"t{grid[3]}"].flatten()
    for t in grid:  # one step's unit vector everywhere, scaled by each step's sigma
        d = one.asset.tensors[f"t{t}"].flatten()
        cos = float(d @ source) / float(d.norm() * source.norm())
        assert cos > 0.999, (t, cos)
    with pytest.raises(JobFailed, match=r"params\.jacobian_t: 7 is not a step"):
        _fit(pixel, store, ctx, kind="jacobian", k=1, iters=2, steps=8, inputs=image,
             jacobian_apply="one_step", jacobian_t=7)  # fmt: skip


def test_a_direction_edit_through_edit_friendly_inversion_is_exact_at_scale_zero(
    pixel: Denoiser, tmp_path: Path
) -> None:
    """inversion ddpm (the reference's for real images): the stored noise maps replay the
    image exactly at scale 0, where DDIM inversion only approximates it."""
    store = LocalBlobStore(tmp_path)
    assets = _Assets()
    ctx = RunContext(blobs=store, assets=assets)
    pca = _fit(pixel, store, ctx, kind="pca", samples=16, k=2)
    asset = assets.add(store, pca, "tiny-pixel")
    image = _blob(store, 5)
    original = np.asarray(Image.open(io.BytesIO(store.get(image))).convert("RGB"), float)

    def edit(**params: object) -> np.ndarray:
        payload = _payload("direction", {"image": image}, asset=asset, **params)
        png = _one(pixel, payload, store, ctx).images[0]
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), float)

    exact = edit(scale=0.0, inversion="ddpm")
    assert np.abs(exact - original).max() <= 1  # one 8-bit step of rounding
    assert np.abs(edit(scale=0.0, inversion="ddim", refine=0) - original).max() > 1
    assert np.abs(edit(scale=5.0, inversion="ddpm") - exact).max() > 1


def test_lam_fit_through_plms_with_the_vgg_content_term(cond: Denoiser, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from worker.engine.methods.mixing import VggPerceptual, vgg16_features

    store = LocalBlobStore(tmp_path)
    clf = AttributeClassifier({"colour": ["red", "blue"]}, width=8, image_size=16).eval()
    params = {"name": "red", "neutral": "a circle", "target": "a red circle", "steps": 3,
              "epochs": 2, "content": "vgg", "sampler": "plms"}  # fmt: skip
    fit = JobPayload(id="l", kind=JobKind.FIT, model="m", method="lam", params=params)
    with pytest.raises(JobFailed, match=r"params\.content: this worker has no VGG16 weights"):
        _one(cond, fit, store, RunContext(blobs=store, classifier=clf))
    save_file(vgg16_features().state_dict(), str(tmp_path / "vgg.safetensors"))
    ctx = RunContext(blobs=store, classifier=clf, vgg=VggPerceptual(tmp_path / "vgg.safetensors"))
    out = _one(cond, fit, store, ctx)
    assert out.asset is not None and out.asset.meta["sampler"] == "plms"


def test_inject_takes_a_mask_input_and_a_masked_job_does_not_change_its_batch_mates(
    pixel: Denoiser, tmp_path: Path
) -> None:
    store = LocalBlobStore(tmp_path)

    def mask_png(value: int) -> str:  # any size: it is read at h's resolution
        buf = io.BytesIO()
        Image.new("L", (40, 40), value).save(buf, format="PNG")
        return store.put(buf.getvalue())

    pair = {"content": _blob(store, 1), "style": _blob(store, 2)}
    params = {"steps": 6, "t_edit": 0, "t_boost": 0, "g": 0.8}

    def job(**inputs: str) -> PreparedJob[Any]:
        return prepare(_payload("inject", {**pair, **inputs}, **params), pixel, store)

    def run(*jobs: PreparedJob[Any]) -> list[bytes]:
        return [out.images[0] for out in run_batch(pixel, list(jobs), lambda *_: None)]

    (plain,) = run(job())
    black, white = mask_png(0), mask_png(255)
    (nothing,) = run(job(mask=black))
    no_injection = prepare(_payload("inject", pair, **{**params, "g": 0.0}), pixel, store)
    assert nothing == run(no_injection)[0]  # a black mask injects nowhere
    assert run(job(mask=white))[0] != nothing
    # in one batch, a masked job leaves its unmasked batch-mate as it is, and vice versa
    # (compared at the same batch size: kernels differ between batch sizes)
    mixed = run(job(), job(mask=black))
    assert mixed[0] == run(job(), job())[0]
    assert mixed[1] == run(job(mask=black), job(mask=black))[1]
    assert plain != nothing
    assert job(mask=black).images["mask"].shape == (1, 1, *pixel.h_shape[1:])


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


class _ByPixels(AttributeClassifier):
    """A classifier that reads its factors off pixel statistics: colour from the red
    channel against the blue, shape from the top half against the bottom."""

    def __init__(self) -> None:
        super().__init__({"colour": ["red", "blue"], "shape": ["circle", "square"]},
                         width=8, image_size=16)  # fmt: skip

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        colour = 8 * (images[:, 0].mean((1, 2)) - images[:, 2].mean((1, 2)))
        shape = 8 * (images[:, :, :8].mean((1, 2, 3)) - images[:, :, 8:].mean((1, 2, 3)))
        return {"colour": torch.stack([colour, -colour], 1),
                "shape": torch.stack([shape, -shape], 1)}  # fmt: skip


def test_conditioned_directions_are_each_stratum_s_own_mean_difference() -> None:
    from contract.methods.directions import DirectionFitParams
    from worker.methods.directions import supervised_by_classifier

    gen = torch.Generator().manual_seed(0)
    images = torch.rand(40, 3, 16, 16, generator=gen) * 2 - 1
    h = {t: torch.randn(40, 4, 2, 2, generator=gen) for t in (0, 500)}
    clf = _ByPixels()
    ctx = RunContext(blobs=cast(Any, None), assets=cast(Any, None), classifier=clf)
    p = DirectionFitParams(name="d", kind="supervised", factor="colour", value="red",
                           samples=40, top_k=3, condition_on=["shape"])  # fmt: skip
    dirs, metrics, strata = supervised_by_classifier(p, h, images, ctx)
    assert strata is not None and strata.factors == ("shape",)
    assert strata.values == (("circle",), ("square",))
    with torch.no_grad():
        logits = clf(images)
    red = logits["colour"].softmax(-1)[:, 0]
    shape = logits["shape"].argmax(-1)
    for k in range(2):
        members = torch.nonzero(shape == k).flatten()
        order = members[torch.argsort(red[members], descending=True)]
        n = min(3, int((red[members] >= 0.5).sum()), int((red[members] < 0.5).sum()))
        assert metrics["pairs_per_stratum"][k] == n > 0
        for t in h:
            want = h[t][order[:n]].mean(0) - h[t][order[-n:]].mean(0)
            torch.testing.assert_close(dirs[t][k], want)
    # a stratum without a positive is refused, naming the field to raise
    blue = images.clone()
    blue[:, 0], blue[:, 2] = -1.0, 1.0
    with pytest.raises(JobFailed, match=r"params\.samples: of 40 samples, \d+ read as shape="):
        supervised_by_classifier(p, h, blue, ctx)
    unknown = p.model_copy(update={"condition_on": ["texture"]})
    with pytest.raises(JobFailed, match=r"params\.condition_on: 'texture' is not a factor"):
        supervised_by_classifier(unknown, h, images, ctx)


class _ByLevel(AttributeClassifier):
    """Three brightness levels (dark, mid, light) and a colour (red against blue)."""

    def __init__(self) -> None:
        super().__init__({"level": ["dark", "mid", "light"], "colour": ["red", "blue"]},
                         width=8, image_size=16)  # fmt: skip

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        mean = images.mean((1, 2, 3))[:, None]
        level = -50 * (mean - torch.tensor([-0.2, 0.0, 0.2])) ** 2
        colour = 8 * (images[:, 0].mean((1, 2)) - images[:, 2].mean((1, 2)))
        return {"level": level, "colour": torch.stack([colour, -colour], 1)}


def test_conditioning_on_the_fit_s_own_factor_takes_each_own_value_s_difference() -> None:
    """Named in condition_on, the fit's own factor splits each stratum by the image's own
    value: for value u, the target's samples against u's only (a 3-valued factor, where
    the plain rule takes its negatives from both other values)."""
    from contract.methods.directions import DirectionFitParams
    from worker.methods.directions import supervised_by_classifier

    gen = torch.Generator().manual_seed(1)
    images = (torch.rand(90, 3, 16, 16, generator=gen) * 2 - 1) * 0.2
    images += torch.linspace(-0.3, 0.3, 90)[:, None, None, None]  # all three levels
    h = {t: torch.randn(90, 4, 2, 2, generator=gen) for t in (0, 500)}
    clf = _ByLevel()
    ctx = RunContext(blobs=cast(Any, None), assets=cast(Any, None), classifier=clf)
    p = DirectionFitParams(name="d", kind="supervised", factor="level", value="light",
                           samples=90, top_k=4, condition_on=["colour", "level"])  # fmt: skip
    dirs, metrics, strata = supervised_by_classifier(p, h, images, ctx)
    assert strata is not None and strata.factors == ("colour", "level")
    assert strata.values == tuple((c, v) for c in ("red", "blue") for v in ("dark", "mid", "light"))
    with torch.no_grad():
        logits = clf(images)
    light = logits["level"].softmax(-1)[:, 2]
    level, colour = logits["level"].argmax(-1), logits["colour"].argmax(-1)
    for k, (c, u) in enumerate((c, u) for c in range(2) for u in range(3)):
        members = colour == c
        if u != 2:  # the light samples against those of the image's own level only
            members &= (level == 2) | (level == u)
        idx = torch.nonzero(members).flatten()
        order = idx[torch.argsort(light[idx], descending=True)]
        n = min(4, int((light[idx] >= 0.5).sum()), int((light[idx] < 0.5).sum()))
        assert metrics["pairs_per_stratum"][k] == n > 0
        if u != 2:
            assert set(level[order[-n:]].tolist()) == {u}
        for t in h:
            want = h[t][order[:n]].mean(0) - h[t][order[-n:]].mean(0)
            torch.testing.assert_close(dirs[t][k], want)
    # the dark and the mid strata's directions differ: they are not one mean over both
    assert not torch.allclose(dirs[0][0], dirs[0][1])
    # the own factor alone is a conditioned fit too
    alone = p.model_copy(update={"condition_on": ["level"]})
    _, metrics, strata = supervised_by_classifier(alone, h, images, ctx)
    assert strata is not None and strata.factors == ("level",) and metrics["strata"] == 3


def test_a_conditioned_edit_moves_each_image_along_its_own_stratum(
    pixel: Denoiser, tmp_path: Path
) -> None:
    from worker.engine.methods.directions import DirectionsAsset

    store = LocalBlobStore(tmp_path)
    assets = _Assets()
    ctx = RunContext(blobs=store, assets=assets, classifier=_ByPixels())
    fit = _fit(pixel, store, ctx, kind="supervised", factor="colour", value="red", samples=32,
               top_k=4, condition_on=["shape"])  # fmt: skip
    assert fit.asset is not None and fit.metrics["strata"] == 2
    conditioned = DirectionsAsset.from_safetensors(fit.asset.data)
    assert conditioned.strata is not None and conditioned.components == 2
    asset = assets.add(store, fit, "tiny-pixel")
    # two images the classifier reads as different shapes: bright top, bright bottom
    top, bottom = np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16, 3), np.uint8)
    top[:8], bottom[8:] = 230, 230
    ids = []
    for arr in (top, bottom):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        ids.append(store.put(buf.getvalue()))

    def edit(asset_id: str, image: str, **params: object) -> JobOutput:
        payload = _payload("direction", {"image": image}, asset=asset_id, scale=5.0, **params)
        return _one(pixel, payload, store, ctx)

    jobs = [prepare(_payload("direction", {"image": i}, asset=asset, scale=5.0), pixel, store)
            for i in ids]  # fmt: skip
    batch = run_batch(pixel, jobs, lambda *_: None, context=ctx)
    assert [o.metrics["stratum"] for o in batch] == [{"shape": "circle"}, {"shape": "square"}]
    # each output is the edit along its own stratum's direction: the same job alone is
    # the edit with an asset holding that direction only, to the bit; in the batch, to
    # one level of 255 (a batch's kernels round differently, and a PNG's level may flip)
    for k, (image, out) in enumerate(zip(ids, batch, strict=True)):
        alone = DirectionsAsset(conditioned.kind, conditioned.model, conditioned.grid,
                                {t: d[k : k + 1] for t, d in conditioned.directions.items()},
                                conditioned.refine)  # fmt: skip
        record = AssetOutput("d", alone.to_safetensors(), {}, {})
        one = assets.add(store, JobOutput(images=[], asset=record), "tiny-pixel")
        solo = edit(asset, image)
        assert solo.images == edit(one, image).images
        diff = np.abs(_pixels(solo.images[0]) - _pixels(out.images[0]))
        assert diff.max() <= 1, diff.max()
    assert np.abs(_pixels(batch[0].images[0]) - _pixels(batch[1].images[0])).max() > 1
    with pytest.raises(JobFailed, match=r"params\.component: the asset holds one direction"):
        edit(asset, ids[0], component=1)
    blind = RunContext(blobs=store, assets=assets)
    with pytest.raises(JobFailed, match=r"params\.asset: this worker has no classifier"):
        _one(pixel, _payload("direction", {"image": ids[0]}, asset=asset), store, blind)
