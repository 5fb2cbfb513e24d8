"""Each method's default edit on the shipped models, judged by the classifier.

The jobs take the service's parameter path with each model's editing defaults
(``benchmarks.defaults.Bench``: what the API hands a worker, run by its executor) on
the repository's examples. Each test asserts what the method's measured figures on
the shipped model support with a margin (``python -m benchmarks.defaults``; the
model card has the figures), and that no output is blank, saturated or noise: the
classifier's ``valid`` head reads every output as a valid image.

Fits use fewer samples, steps and epochs than their defaults (the edits are the
defaults' own), so the file runs in about two minutes on a 2-core CPU; the figures
with the defaults are the benchmark's. Every assertion leaves a margin of at least one
output to the figure measured on this model, since a different CPU's kernels may move
an output that sits on a class boundary.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from benchmarks.defaults import Bench, _examples
from worker.engine import load_denoiser
from worker.engine.classifier import GRAIN_LIMIT, AttributeClassifier, grain
from worker.engine.images import from_uint8
from worker.training import aligned

ROOT = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    dn = load_denoiser(ROOT / "shapes32-ddpm", name="shapes32", device="cpu", dtype="float32")
    clf = AttributeClassifier.load(ROOT / "shapes32-classifier")
    yield Bench(dn, clf, aligned, tmp_path_factory.mktemp("blobs"))


@pytest.fixture(scope="module")
def text_bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    dn = load_denoiser(ROOT / "shapes32-text", name="shapes32-text", device="cpu",
                       dtype="float32")  # fmt: skip
    clf = AttributeClassifier.load(ROOT / "shapes32-classifier")
    yield Bench(dn, clf, aligned, tmp_path_factory.mktemp("text-blobs"))


def _pixels(b: Bench, outs: list) -> torch.Tensor:  # type: ignore[type-arg]
    """The outputs' first images, (N, 3, H, W) in [-1, 1]."""
    return from_uint8(b.images(outs))


def _valid(b: Bench, outs: list) -> np.ndarray:  # type: ignore[type-arg]
    """Per output: the classifier's valid head says valid (not blank, saturated, noise)."""
    return np.asarray(b.clf.predict(_pixels(b, outs))["valid"][0].numpy() == 1)


def test_reconstruct_keeps_every_example(bench: Bench) -> None:
    images, y = _examples(aligned)
    outs = bench.run([bench.payload("reconstruct", {"image": i}) for i in bench.put(images)])
    labels, in_distribution = bench.judge(outs)
    # measured on 70 images (examples and held-out): in distribution 1.00, every factor
    # kept 1.00 (v4; v3 0.971)
    assert in_distribution.all() and np.all(labels == y, axis=1).sum() >= len(y) - 1


def test_inject_gives_valid_images_that_keep_the_content(bench: Bench) -> None:
    images, y = _examples(aligned)
    ids = bench.put(images)
    pairs = [(0, 1), (1, 0), (2, 3), (5, 4)]  # (content, style): they differ in every factor
    outs = bench.run([bench.payload("inject", {"content": ids[c], "style": ids[s]})
                      for c, s in pairs])  # fmt: skip
    labels, _ = bench.judge(outs)
    # measured on 64 held-out pairs (v4): in distribution 0.98, shape kept 0.97, the
    # style's background taken 0.97
    assert _valid(bench, outs).sum() >= 3
    shape = list(aligned.FACTORS).index("shape")
    background = list(aligned.FACTORS).index("background")
    kept = [labels[k, shape] == y[c, shape] for k, (c, _) in enumerate(pairs)]
    taken = [labels[k, background] == y[s, background] for k, (_, s) in enumerate(pairs)]
    assert sum(kept) >= 3 and sum(taken) >= 3, (kept, taken)


def test_a_supervised_direction_moves_its_factor(bench: Bench) -> None:
    images, y = _examples(aligned)
    size = list(aligned.FACTORS).index("size")
    small = np.flatnonzero(y[:, size] == aligned.FACTORS["size"].index("small"))
    asset, _ = bench.fit("directions", kind="supervised", factor="size", value="large",
                         samples=256, top_k=16)  # fmt: skip
    outs = bench.run([bench.payload("direction", {"image": i}, asset=asset)
                      for i in bench.put(images[small])])  # fmt: skip
    labels, _ = bench.judge(outs)
    # measured with the defaults (512 samples, one direction per shape, aspect and
    # own size, positives paired on the other factors, scale 2) on 32 held-out images
    # lacking the value (docs/measured.md); 256 samples here (with 64, a combination found
    # no positive with a negative read the same on the other factors: the fit refuses)
    assert _valid(bench, outs).all()
    assert (labels[:, size] == aligned.FACTORS["size"].index("large")).sum() >= 2
    others = [k for k in range(len(aligned.FACTORS)) if k != size]
    assert (labels[:, others] == y[small][:, others]).all(axis=1).sum() >= 2
    # each image took the direction of its own shape, aspect and size (the model's
    # condition_on: small to large, in the image's shape and aspect)
    assert [o.metrics["stratum"]["size"] for o in outs] == ["small"] * len(outs)
    assert [set(o.metrics["stratum"]) for o in outs] == [{"shape", "size", "aspect"}] * len(outs)


def test_a_shape_direction_squares_small_triangles(bench: Bench) -> None:
    """The model's condition_on names the fit's own factor: a triangle moves by squares
    minus triangles. Small triangles were the case the difference from all non-squares
    missed (v3, 32 held-out images: triangles squared in 0.579, circles in 1.000; with
    the own factor 1.000 each, preservation 1.000; on v4 with the own factor and no
    balance, triangles 0.895, circles 1.000; docs/measured.md)."""
    held, held_y = aligned.generate(7_100_000, 64)
    y = aligned.label_array(held_y)
    cols = list(aligned.FACTORS)
    shape, size = cols.index("shape"), cols.index("size")
    small_triangles = np.flatnonzero(
        (y[:, shape] == aligned.FACTORS["shape"].index("triangle"))
        & (y[:, size] == aligned.FACTORS["size"].index("small"))
    )[:4]
    assert len(small_triangles) == 4
    # the subject here is the own factor's strata, so the model's balance is left off
    # (the size test above fits with it), which lets 128 samples fill every stratum
    asset, _ = bench.fit("directions", kind="supervised", factor="shape", value="square",
                         samples=128, top_k=16, balance=False)  # fmt: skip
    outs = bench.run([bench.payload("direction", {"image": i}, asset=asset)
                      for i in bench.put(held[small_triangles])])  # fmt: skip
    labels, _ = bench.judge(outs)
    assert [o.metrics["stratum"]["shape"] for o in outs] == ["triangle"] * 4
    assert _valid(bench, outs).all()
    squared = labels[:, shape] == aligned.FACTORS["shape"].index("square")
    others = [k for k in range(len(cols)) if k != shape]
    kept = (labels[:, others] == y[small_triangles][:, others]).all(axis=1)
    assert squared.sum() >= 3 and kept.sum() >= 3, (squared, kept)


def test_a_boundary_edit_gives_valid_images(bench: Bench) -> None:
    """B's default edit (strength 2) does not reach its goal on this model (the card:
    size=large succeeded in 1 of 3 examples here); what holds is a fit above the
    majority baseline and valid outputs."""
    images, y = _examples(aligned)
    size = list(aligned.FACTORS).index("size")
    small = np.flatnonzero(y[:, size] == aligned.FACTORS["size"].index("small"))
    held, held_y = aligned.generate(7_000_000, 32)
    labels_ = aligned.label_array(held_y)[:, size] == aligned.FACTORS["size"].index("large")
    ids = bench.put(held)
    pos = [i for i, p in zip(ids, labels_, strict=True) if p][:10]
    neg = [i for i, p in zip(ids, labels_, strict=True) if not p][:10]
    asset, fitted = bench.fit("boundary", positives=pos, negatives=neg, t0=500, steps=10)
    assert fitted.metrics["balanced_accuracy_h"] > fitted.metrics["majority_baseline"]
    outs = bench.run([bench.payload("boundary-edit", {"image": i}, asset=asset)
                      for i in bench.put(images[small])])  # fmt: skip
    assert _valid(bench, outs).all()


def test_style_generate_takes_the_style_background(bench: Bench) -> None:
    rng = np.random.default_rng(0)
    white = aligned.FACTORS["background"].index("white")
    style = [aligned.render(aligned.Labels(i % 3, i % 2, (i // 2) % 2, i % 4, white), rng)
             for i in range(8)]  # fmt: skip
    asset, _ = bench.fit("style-noise", images=bench.put(np.stack(style)))
    outs = bench.run([bench.payload("style-generate", seed=k, asset=asset) for k in range(8)])
    labels, _ = bench.judge(outs)
    assert _valid(bench, outs).all()
    bg = list(aligned.FACTORS).index("background")
    assert (labels[:, bg] == white).mean() >= 0.75


def test_style_generate_with_a_prompt_takes_the_style_and_keeps_the_prompt(
    text_bench: Bench,
) -> None:
    """D on the text model with its defaults (the signal leak from t_start 400, eta 1):
    prompts name shape, size and aspect, the style comes from the start (the card, 192
    samples per style; here 8 of 8 are valid and take both style factors, 7 keep the
    prompt's content), and no sample is grainy (at eta 0 0.17 of red-on-white samples
    were)."""
    assert text_bench.dn.editing_defaults["style-generate"]["eta"] == 1.0
    rng = np.random.default_rng(0)
    red = aligned.FACTORS["colour"].index("red")
    white = aligned.FACTORS["background"].index("white")
    style = [aligned.render(aligned.Labels(i % 3, i % 2, (i // 2) % 2, red, white), rng)
             for i in range(8)]  # fmt: skip
    asset, _ = text_bench.fit("style-noise", images=text_bench.put(np.stack(style)))
    asked = [aligned.Labels(k % 3, (k // 3) % 2, (k // 6) % 2, 0, 0) for k in range(8)]
    prompts = [lab.caption(frozenset(aligned.CONTENT_FACTORS)) for lab in asked]
    outs = text_bench.run([text_bench.payload("style-generate", seed=k, asset=asset,
                                              prompt=prompts[k]) for k in range(8)])  # fmt: skip
    labels, _ = text_bench.judge(outs)
    assert _valid(text_bench, outs).sum() >= 7
    cols = list(aligned.FACTORS)
    takes = (labels[:, cols.index("colour")] == red) & (
        labels[:, cols.index("background")] == white
    )
    assert takes.sum() >= 6
    content = [cols.index(f) for f in aligned.CONTENT_FACTORS]
    wanted = aligned.label_array(asked)[:, content]
    assert np.all(labels[:, content] == wanted, axis=1).sum() >= 6
    assert (grain(_pixels(text_bench, outs)) < GRAIN_LIMIT).all()


def test_mix_of_a_fitted_lam_gives_valid_images(text_bench: Bench) -> None:
    """C on this model, with its defaults (eta 1, each seed's noises fixed; lam 1 on the
    first 30 of 50 steps to start; lr 0.01; the scorer at temperature 8): the fit moves
    lam, the asset keeps the eta,
    and the mixes are valid, clean images (the card: 64 seeds, colour=blue in
    distribution 0.984, none grainy; at eta 0 half were grainy). The fit here runs one
    epoch on 2 seeds instead of 10 on the model's 4."""
    from worker.engine.methods.mixing import LamAsset, reference_init

    defaults: dict[str, Any] = text_bench.dn.editing_defaults["lam"]
    assert defaults["eta"] == 1.0 and defaults["temperature"] == 8.0  # what the card measured
    asset, fitted = text_bench.fit(
        "lam", neutral="a circle", target="a blue circle", epochs=1, seeds=2
    )
    assert fitted.asset is not None
    stored = LamAsset.from_safetensors(fitted.asset.data)
    assert stored.eta == 1.0
    lam = stored.lam
    assert not np.allclose(
        lam.numpy(), reference_init(len(lam), float(defaults["noisy_share"])).numpy()
    )
    outs = text_bench.run([text_bench.payload("mix", seed=s, asset=asset) for s in range(4)])
    assert _valid(text_bench, outs).sum() >= 3
    assert (grain(_pixels(text_bench, outs)) < GRAIN_LIMIT).all()
