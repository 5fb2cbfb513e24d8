"""Method C on the tiny SD-layout model: mixing, checkpointed gradients, corrections, scorer."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.engine.tiny_models import save_tiny_clip
from worker.engine import Denoiser, ddim_sample, timestep_grid
from worker.engine.classifier import AttributeClassifier
from worker.engine.errors import InputError
from worker.engine.methods.mixing import (
    ClassifierScorer,
    ClipScorer,
    Sampler,
    optimise_lam,
    real_image_corrections,
    reference_init,
    sample_mixed,
)

NEUTRAL, TARGET = "a photo of a circle", "a photo of a red circle"


def _x_T(cond: Denoiser, n: int = 2) -> torch.Tensor:
    return torch.randn(n, *cond.sample_shape, generator=torch.Generator().manual_seed(0))


def test_lam_one_everywhere_is_the_neutral_prompt_image_exactly(cond: Denoiser) -> None:
    grid = timestep_grid(5, 1000)
    x_T = _x_T(cond)
    c_n, c_t = cond.encode_prompt([NEUTRAL] * 2), cond.encode_prompt([TARGET] * 2)
    with torch.no_grad():
        mixed = sample_mixed(cond, x_T, grid, c_n, c_t, torch.ones(5))
        neutral = ddim_sample(cond, x_T, grid, cond=cond.conditioning([NEUTRAL] * 2))
        target = sample_mixed(cond, x_T, grid, c_n, c_t, torch.zeros(5))
    assert torch.equal(mixed, neutral)
    assert not torch.allclose(target, neutral)


def test_clip_x0_keeps_the_mix_in_the_pixel_range_and_lam_gets_a_gradient(
    cond: Denoiser,
) -> None:
    """With clip_x0, every step's x0 estimate is clamped, and the last step returns it."""
    grid = timestep_grid(5, 1000)
    x_T = _x_T(cond) * 4  # far from the prior: the tiny random model's x0 leaves [-1, 1]
    c_n, c_t = cond.encode_prompt([NEUTRAL] * 2), cond.encode_prompt([TARGET] * 2)
    lam = reference_init(5)
    with torch.no_grad():
        plain = sample_mixed(cond, x_T, grid, c_n, c_t, lam)
        clipped = sample_mixed(cond, x_T, grid, c_n, c_t, lam, clip_x0=True)
    assert plain.abs().max() > 1 and clipped.abs().max() <= 1
    lam = lam.requires_grad_(True)
    out = sample_mixed(cond, x_T, grid, c_n, c_t, lam, checkpointed=True, clip_x0=True)
    out.square().mean().backward()  # type: ignore[no-untyped-call]
    assert lam.grad is not None and lam.grad.abs().sum() > 0


def test_eta_adds_the_fixed_noises_and_lam_gets_a_gradient_through_them(cond: Denoiser) -> None:
    """METHODS.md: x_T and all noises fixed. With eta > 0 a run is repeatable given its
    noise maps, differs from the deterministic one, and two lams share the noises."""
    grid = timestep_grid(5, 1000)
    x_T = _x_T(cond)
    noises = [torch.randn(x_T.shape, generator=torch.Generator().manual_seed(k)) for k in range(5)]
    c_n, c_t = cond.encode_prompt([NEUTRAL] * 2), cond.encode_prompt([TARGET] * 2)
    lam = reference_init(5)
    with torch.no_grad():
        a = sample_mixed(cond, x_T, grid, c_n, c_t, lam, eta=1.0, noises=noises)
        again = sample_mixed(cond, x_T, grid, c_n, c_t, lam, eta=1.0, noises=noises)
        plain = sample_mixed(cond, x_T, grid, c_n, c_t, lam)
        other = [n.flip(0) for n in noises]  # the two rows' noises swapped
        swapped = sample_mixed(cond, x_T, grid, c_n, c_t, lam, eta=1.0, noises=other)
    assert torch.equal(a, again) and not torch.allclose(a, plain)
    assert not torch.allclose(a, swapped)
    with torch.enable_grad():
        lam = lam.clone().requires_grad_(True)
        out = sample_mixed(cond, x_T, grid, c_n, c_t, lam, checkpointed=True, eta=1.0,
                           noises=noises)  # fmt: skip
        out.square().mean().backward()  # type: ignore[no-untyped-call]
    assert lam.grad is not None and lam.grad.abs().sum() > 0
    with pytest.raises(InputError, match="one fixed noise map per step"):
        sample_mixed(cond, x_T, grid, c_n, c_t, lam.detach(), eta=0.5)
    with pytest.raises(InputError, match="PLMS steps are deterministic"):
        sample_mixed(cond, x_T, grid, c_n, c_t, lam.detach(), eta=0.5, noises=noises,
                     sampler="plms")  # fmt: skip


def test_a_mix_on_one_seed_draws_what_a_fit_on_several_drew_for_it(cond: Denoiser) -> None:
    from worker.methods.mixing import seed_noise, seed_noises

    x_T, noises = seed_noises(cond, range(7, 10), 4)
    one_T, one = seed_noises(cond, range(8, 9), 4)
    assert torch.equal(x_T[1:2], one_T) and len(noises) == len(one) == 4
    assert all(torch.equal(n[1:2], o) for n, o in zip(noises, one, strict=True))
    assert torch.equal(seed_noise(cond, range(7, 10)), x_T)  # eta 0 draws the same x_T
    assert not torch.equal(noises[0][0], noises[0][1])


def _assert_lam_gets_a_gradient(
    cond: Denoiser, x_T: torch.Tensor, grid: list[int], c_n: torch.Tensor, c_t: torch.Tensor,
    sampler: Sampler = "ddim",
) -> None:  # fmt: skip
    lam = reference_init(len(grid)).requires_grad_(True)
    out = sample_mixed(cond, x_T, grid, c_n, c_t, lam, checkpointed=True, sampler=sampler)
    out.square().mean().backward()  # type: ignore[no-untyped-call]
    assert lam.grad is not None and lam.grad.abs().sum() > 0


def test_checkpointed_run_matches_and_gives_lam_a_gradient(cond: Denoiser) -> None:
    grid = timestep_grid(4, 1000)
    x_T = _x_T(cond)
    c_n, c_t = cond.encode_prompt([NEUTRAL] * 2), cond.encode_prompt([TARGET] * 2)
    lam = reference_init(4)
    plain = sample_mixed(cond, x_T, grid, c_n, c_t, lam)
    assert torch.allclose(plain, sample_mixed(cond, x_T, grid, c_n, c_t, lam, checkpointed=True),
                          atol=1e-6)  # fmt: skip
    _assert_lam_gets_a_gradient(cond, x_T, grid, c_n, c_t)


def test_corrections_bring_the_neutral_run_back_to_the_real_image(cond: Denoiser) -> None:
    grid = timestep_grid(5, 1000)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(1, *cond.sample_shape, generator=g)
    c_n, c_t = cond.encode_prompt([NEUTRAL]), cond.encode_prompt([TARGET])
    corr = real_image_corrections(cond, x0, grid, c_n, correct_share=1.0, generator=g, refine=0)
    with torch.no_grad():
        back = sample_mixed(cond, corr.x_T, grid, c_n, c_t, torch.ones(5), corrections=corr)
        plain = sample_mixed(cond, corr.x_T, grid, c_n, c_t, torch.ones(5))
    assert torch.allclose(back, x0, atol=1e-4)
    assert (plain - x0).abs().max() > (back - x0).abs().max()


def test_classifier_scorer_text_embedding_names_values() -> None:
    clf = AttributeClassifier({"colour": ["red", "blue"], "shape": ["circle", "square"]})
    scorer = ClassifierScorer(clf)
    e = scorer.text_embed(["a red circle", "a thing"])
    assert e[0].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert e[1].tolist() == [0.5, 0.5, 0.5, 0.5]


def test_optimisation_moves_lam_and_reports_losses(cond: Denoiser) -> None:
    clf = AttributeClassifier({"colour": ["red", "blue"]}, width=8, image_size=16)
    grid = timestep_grid(3, 1000)
    steps: list[tuple[int, int]] = []
    fit = optimise_lam(cond, _x_T(cond, 1), grid, NEUTRAL, TARGET, ClassifierScorer(clf),
                       epochs=3, progress=lambda i, n: steps.append((i, n)))  # fmt: skip
    assert fit.lam.shape == (3,) and not torch.equal(fit.lam, reference_init(3))
    assert len(fit.losses) == 3 and all(torch.isfinite(torch.tensor(fit.losses)))
    # every sampling step of every epoch: 3 epochs of 3 steps
    assert steps == [(i, 9) for i in range(1, 10)]
    assert fit.edited is not None and fit.edited.shape == (1, 3, 16, 16)


def test_clip_scorer_from_a_local_folder(tmp_path: Path, cond: Denoiser) -> None:
    scorer = ClipScorer(save_tiny_clip(tmp_path / "clip"))
    images = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    e = scorer.image_embed(images)
    assert e.shape == (2, 24) and torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-5)
    e[:, 0].sum().backward()  # type: ignore[no-untyped-call]
    assert images.grad is not None and images.grad.abs().sum() > 0  # differentiable to pixels
    t = scorer.text_embed([NEUTRAL, TARGET])
    assert t.shape == (2, 24) and not torch.allclose(t[0], t[1])
    x = images.detach()
    e_x, e_neg = scorer.image_embed(x), scorer.image_embed(-x)
    same = scorer.content(x, x, e_x, e_x)
    assert float(same) < 1e-5 < float(scorer.content(x, -x, e_x, e_neg))
    fit = optimise_lam(cond, _x_T(cond, 1), timestep_grid(3, 1000), NEUTRAL, TARGET, scorer,
                       epochs=2)  # fmt: skip
    assert not torch.equal(fit.lam, reference_init(3)) and all(map(math.isfinite, fit.losses))


def test_plms_is_the_reference_multistep_and_differs_from_ddim(cond: Denoiser) -> None:
    """PLMS (the reference's sampler): the first step averages eps at x_t and at its DDIM
    estimate of x_s, later steps are Adams-Bashforth over the eps history. Written out
    here step by step for lam = 1 (the neutral prompt), against sample_mixed."""
    from worker.engine.sampling import ddim_step, reverse_steps

    grid = timestep_grid(6, 1000)
    x_T = _x_T(cond)
    c_n, c_t = cond.encode_prompt([NEUTRAL] * 2), cond.encode_prompt([TARGET] * 2)
    cn = cond.conditioning([NEUTRAL] * 2)
    with torch.no_grad():
        plms = sample_mixed(cond, x_T, grid, c_n, c_t, torch.ones(6), sampler="plms")
        ddim = sample_mixed(cond, x_T, grid, c_n, c_t, torch.ones(6))
        x, old = x_T.clone(), list[torch.Tensor]()
        for step in reverse_steps(grid, cond.schedule):
            e_t = cond.eps(x, step.t, cn)
            if not old:
                x_next = ddim_step(x, e_t, step.ab_t, step.ab_s)[0]
                e = (e_t + cond.eps(x_next, step.s, cn)) / 2
            elif len(old) == 1:
                e = (3 * e_t - old[-1]) / 2
            elif len(old) == 2:
                e = (23 * e_t - 16 * old[-1] + 5 * old[-2]) / 12
            else:
                e = (55 * e_t - 59 * old[-1] + 37 * old[-2] - 9 * old[-3]) / 24
            x = ddim_step(x, e, step.ab_t, step.ab_s)[0]
            old.append(e_t)
    torch.testing.assert_close(plms, x, rtol=0, atol=1e-5)
    assert (plms - ddim).abs().max() > 1e-3
    _assert_lam_gets_a_gradient(cond, x_T, grid, c_n, c_t, sampler="plms")  # checkpointed


def test_plms_corrections_bring_the_neutral_run_back_to_the_real_image(cond: Denoiser) -> None:
    grid = timestep_grid(5, 1000)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(1, *cond.sample_shape, generator=g)
    c_n, c_t = cond.encode_prompt([NEUTRAL]), cond.encode_prompt([TARGET])
    corr = real_image_corrections(cond, x0, grid, c_n, correct_share=1.0, sampler="plms",
                                  generator=g, refine=0)  # fmt: skip
    with torch.no_grad():
        back = sample_mixed(cond, corr.x_T, grid, c_n, c_t, torch.ones(5), corrections=corr,
                            sampler="plms")  # fmt: skip
    assert torch.allclose(back, x0, atol=1e-4)


def test_corrections_with_fixed_noises_bring_a_stochastic_run_back(cond: Denoiser) -> None:
    """eta > 0 on a real image: the corrections are taken on the run with the same
    noise maps, so the neutral run with them returns the image, as at eta 0."""
    grid = timestep_grid(5, 1000)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(1, *cond.sample_shape, generator=g)
    noises = [torch.randn(x0.shape, generator=g) for _ in range(5)]
    c_n, c_t = cond.encode_prompt([NEUTRAL]), cond.encode_prompt([TARGET])
    corr = real_image_corrections(cond, x0, grid, c_n, correct_share=1.0, eta=1.0,
                                  noises=noises, generator=g, refine=0)  # fmt: skip
    with torch.no_grad():
        back = sample_mixed(cond, corr.x_T, grid, c_n, c_t, torch.ones(5), corrections=corr,
                            eta=1.0, noises=noises)  # fmt: skip
    assert torch.allclose(back, x0, atol=1e-4)


def test_vgg_perceptual_term_from_local_weights(tmp_path: Path, cond: Denoiser) -> None:
    """torchvision's vgg16 layout, loaded from a local safetensors file (here random
    weights: the layout and the distance are what is tested, not ImageNet features)."""
    from safetensors.torch import save_file

    from worker.engine.methods.mixing import VggPerceptual, WithContent, vgg16_features

    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in vgg16_features().state_dict().items()}
    save_file(state, str(tmp_path / "vgg16.safetensors"))
    vgg = VggPerceptual(tmp_path / "vgg16.safetensors")
    g = torch.Generator().manual_seed(3)
    a = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    b = (a + 0.3 * torch.randn(2, 3, 16, 16, generator=g)).requires_grad_(True)
    assert float(vgg.distance(a, a)) < 1e-10
    far = vgg.distance(a, b)
    assert float(far) > 0.01
    far.backward()  # type: ignore[no-untyped-call]
    assert b.grad is not None and b.grad.abs().sum() > 0
    clf = AttributeClassifier({"colour": ["red", "blue"]}, width=8, image_size=16).eval()
    scorer = WithContent(ClassifierScorer(clf), vgg)
    e = scorer.image_embed(a)
    assert float(scorer.content(a, b, e, e)) == float(vgg.distance(a, b))
