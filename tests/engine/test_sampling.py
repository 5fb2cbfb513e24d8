"""Inversion, sampling and the asymmetric step."""

from __future__ import annotations

import pytest
import torch

from worker.engine import (
    Denoiser,
    InputError,
    asymmetric_eps,
    asymmetric_step,
    ddim_invert,
    ddim_sample,
    ddim_step,
    ddpm_invert,
    timestep_grid,
)
from worker.engine.sampling import predict_x0


def _images(seed: int, batch: int = 2, size: int = 16) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_ddim_step_is_invertible_for_a_fixed_eps() -> None:
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    up, _ = ddim_step(x, eps, 0.9, 0.5)
    down, x0 = ddim_step(up, eps, 0.5, 0.9)
    torch.testing.assert_close(down, x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x0, predict_x0(up, eps, 0.5))


def test_clip_x0_clamps_the_estimate_and_keeps_the_models_eps_for_the_direction() -> None:
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 3
    eps = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    x0 = predict_x0(x, eps, 0.5)
    assert (x0.abs() > 1).any() and (x0.abs() < 1).any()  # both kinds of element
    x_s, clipped = ddim_step(x, eps, 0.5, 0.8, clip_x0=True)
    assert torch.equal(clipped, x0.clamp(-1, 1))  # inside the range, x0 is untouched
    # x_s = sqrt(ab_s) x0_clipped + sqrt(1 - ab_s) eps, the same arithmetic as the step
    torch.testing.assert_close(x_s, 0.8**0.5 * clipped + 0.2**0.5 * eps, rtol=0, atol=1e-6)
    plain, _ = ddim_step(x, eps, 0.5, 0.8)
    assert not torch.equal(plain, x_s)


def test_ddim_trajectory_shapes(pixel: Denoiser) -> None:
    grid = timestep_grid(8, 1000, "linspace", t_max=500)
    traj = ddim_invert(pixel, _images(0), grid, record_h=True, record_eps=True)
    assert len(traj.xs) == 8 and len(traj.hs) == 7 and len(traj.eps) == 7
    assert traj.x_T.shape == (2, 3, 16, 16)
    assert traj.hs[0].shape == (2, *pixel.h_shape) and traj.hs[0].dtype == torch.float32
    assert pixel.hooks.active == []
    out = ddim_sample(pixel, traj.x_T, grid)
    assert out.shape == (2, 3, 16, 16)


@pytest.mark.parametrize("fixture", ["pixel", "cond"])
def test_edit_friendly_inversion_is_exact(fixture: str, request: pytest.FixtureRequest) -> None:
    dn: Denoiser = request.getfixturevalue(fixture)
    c = dn.conditioning(["a red circle", "a blue square"], 3.0) if dn.conditional else None
    x0 = dn.encode(_images(1))
    grid = timestep_grid(10, 1000)
    maps = ddpm_invert(dn, x0, grid, cond=c, generator=torch.Generator().manual_seed(3))
    assert len(maps.zs) == 10
    out = ddim_sample(dn, maps.x_T, grid, cond=c, eta=maps.eta, noises=maps.zs)
    assert (out - x0).abs().max() < 1e-4


def test_batch_equals_single_runs_through_inversion_and_sampling(pixel: Denoiser) -> None:
    """Tolerance 1e-3 over 2 x 10 chained steps.

    Per call, batch and single runs differ by ~1e-6 (other conv kernels); the DDIM
    update divides by sqrt(ab_t) (0.006 at t = 999), so a chain of 19 steps on a
    random-weight network grows that to ~3e-4 on [-1, 1] images.
    """
    grid = timestep_grid(10, 1000)
    x0 = _images(2, batch=3)
    traj = ddim_invert(pixel, x0, grid)
    batched = ddim_sample(pixel, traj.x_T, grid)
    singles = torch.cat(
        [ddim_sample(pixel, ddim_invert(pixel, x0[i : i + 1], grid).x_T, grid) for i in range(3)]
    )
    torch.testing.assert_close(batched, singles, rtol=1e-3, atol=1e-3)


def test_seeded_runs_repeat_exactly(pixel: Denoiser) -> None:
    grid = timestep_grid(6, 1000)
    x_T = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))

    def run(seed: int) -> torch.Tensor:
        return ddim_sample(pixel, x_T, grid, eta=1.0, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))
    maps_a = ddpm_invert(pixel, _images(5), grid, generator=torch.Generator().manual_seed(9))
    maps_b = ddpm_invert(pixel, _images(5), grid, generator=torch.Generator().manual_seed(9))
    assert all(torch.equal(a, b) for a, b in zip(maps_a.zs, maps_b.zs, strict=True))


def test_per_step_eta_and_intermediate_start(pixel: Denoiser) -> None:
    grid = timestep_grid(10, 1000, "linspace", t_max=400)
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(10))
    etas = [1.0] * 5 + [0.0] * 5
    a = ddim_sample(pixel, x, grid, eta=etas, generator=torch.Generator().manual_seed(1))
    b = ddim_sample(pixel, x, grid, eta=etas, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(a, b)  # the stochastic steps drew different noise
    with pytest.raises(InputError, match="eta: expected one value or 10"):
        ddim_sample(pixel, x, grid, eta=[0.0, 1.0])


def test_progress_reports_every_step(pixel: Denoiser) -> None:
    seen: list[tuple[int, int]] = []
    ddim_sample(
        pixel, torch.zeros(1, 3, 16, 16), [0, 500, 999], progress=lambda i, n: seen.append((i, n))
    )
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_bad_grid_is_refused(pixel: Denoiser) -> None:
    with pytest.raises(InputError, match="increase strictly"):
        ddim_sample(pixel, torch.zeros(1, 3, 16, 16), [500, 100])


def test_asymmetric_step_with_identity_edit_is_a_plain_step(pixel: Denoiser) -> None:
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(11))
    eps = pixel.eps(x, 600)
    plain, _ = ddim_step(x, eps, pixel.schedule.ab(600), pixel.schedule.ab(500))
    asym, _ = asymmetric_step(pixel, x, 600, 500, lambda h, t: h)
    torch.testing.assert_close(asym, plain, rtol=0, atol=0)


def test_asymmetric_step_takes_x0_from_the_edit_and_direction_from_eps(pixel: Denoiser) -> None:
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(12))
    eps, eps_edit, h, h_edit = asymmetric_eps(pixel, x, 600, lambda h, t: h + 0.5)
    torch.testing.assert_close(h_edit, h + 0.5)
    assert (eps_edit - eps).abs().max() > 1e-3
    with pixel.hooks.edit_h("ref", lambda h, t: h + 0.5):
        torch.testing.assert_close(eps_edit, pixel.eps(x, 600), rtol=1e-5, atol=1e-5)
    ab_t, ab_s = pixel.schedule.ab(600), pixel.schedule.ab(500)
    got, x0 = asymmetric_step(pixel, x, 600, 500, lambda h, t: h + 0.5)
    expected = ab_s**0.5 * predict_x0(x, eps_edit, ab_t) + (1 - ab_s) ** 0.5 * eps
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x0, predict_x0(x, eps_edit, ab_t), rtol=1e-5, atol=1e-5)


def test_per_sample_generators_make_results_independent_of_the_batch(pixel: Denoiser) -> None:
    grid = timestep_grid(5, 1000)
    x0 = _images(13, batch=2)
    both = ddpm_invert(
        pixel,
        x0,
        grid,
        generator=[torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)],
    )
    second = ddpm_invert(pixel, x0[1:], grid, generator=[torch.Generator().manual_seed(2)])
    torch.testing.assert_close(both.x_T[1:], second.x_T)
    with pytest.raises(InputError, match="2 generators for a batch of 1"):
        ddpm_invert(pixel, x0[:1], grid, generator=[torch.Generator(), torch.Generator()])


def test_negative_fixed_point_iterations_are_refused(pixel: Denoiser) -> None:
    x0 = torch.zeros(1, *pixel.sample_shape)
    with pytest.raises(InputError, match="fixed_point_iters"):
        ddim_invert(pixel, x0, timestep_grid(3, 1000), fixed_point_iters=-1)
