"""Method E on a tiny seeded U-Net: direction fits and the edit rule."""

from __future__ import annotations

import itertools

import pytest
import torch

from worker.engine import Denoiser, InputError, ddim_sample, timestep_grid
from worker.engine.methods.directions import (
    collect_h,
    edit_with_direction,
    jacobian_directions,
    pca_fit,
    supervised_directions,
)

GRID = timestep_grid(6, 1000)


def _x_T(seed: int, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_supervised_direction_is_the_mean_difference() -> None:
    pos = {10: torch.ones(4, 2, 2, 2) * 3, 20: torch.zeros(4, 2, 2, 2)}
    neg = {10: torch.ones(5, 2, 2, 2), 20: torch.ones(5, 2, 2, 2)}
    dirs = supervised_directions(pos, neg)
    torch.testing.assert_close(dirs[10], torch.full((2, 2, 2), 2.0))
    torch.testing.assert_close(dirs[20], torch.full((2, 2, 2), -1.0))
    with pytest.raises(InputError, match="h_neg"):
        supervised_directions(pos, {10: neg[10]})


def test_scale_zero_is_plain_sampling_and_a_direction_moves_the_image(pixel: Denoiser) -> None:
    x_T = _x_T(0)
    h_by_step, x0 = collect_h(pixel, x_T, GRID, eta=0.0)
    assert sorted(h_by_step) == GRID and h_by_step[GRID[0]].shape == (2, *pixel.h_shape)
    torch.testing.assert_close(x0, ddim_sample(pixel, x_T, GRID))
    dirs = {t: torch.ones(pixel.h_shape) for t in GRID}
    same = edit_with_direction(pixel, x_T, GRID, dirs, 0.0)
    torch.testing.assert_close(same, x0)
    moved = edit_with_direction(pixel, x_T, GRID, dirs, 2.0)
    asym = edit_with_direction(pixel, x_T, GRID, dirs, 2.0, asymmetric=True)
    assert (moved - x0).abs().max() > 1e-2 and (asym - moved).abs().max() > 1e-4
    late = edit_with_direction(
        pixel, x_T, GRID, {t: dirs[t] for t in GRID if t >= 500}, 2.0, t_edit=500
    )
    assert (late - x0).abs().max() > 1e-3
    with pytest.raises(InputError, match="no direction for steps"):
        edit_with_direction(pixel, x_T, GRID, {}, 1.0)


def test_pca_fit_scales_by_std_and_aligns_signs(pixel: Denoiser) -> None:
    h_by_step, _ = collect_h(
        pixel, _x_T(1, batch=12), GRID, eta=1.0, generator=torch.Generator().manual_seed(0)
    )
    dirs, stds = pca_fit(h_by_step, k=3)
    for t in GRID:
        norms = dirs[t].flatten(1).norm(dim=1)
        torch.testing.assert_close(norms, stds[t], rtol=1e-4, atol=1e-6)
        assert bool((stds[t][:-1] >= stds[t][1:]).all())
    steps = sorted(GRID, reverse=True)
    for a, b in itertools.pairwise(steps):
        assert bool(((dirs[a].flatten(1) * dirs[b].flatten(1)).sum(1) >= 0).all())


def test_jacobian_directions_are_orthonormal_with_decreasing_sigma(pixel: Denoiser) -> None:
    x_t = _x_T(2, batch=1)
    u, sigma = jacobian_directions(pixel, x_t, 500, k=3, iters=25, tol=1e-6,
                                   generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert u.shape == (3, *pixel.h_shape)
    gram = u.flatten(1) @ u.flatten(1).T
    torch.testing.assert_close(gram, torch.eye(3), atol=1e-2, rtol=0)
    assert bool((sigma > 0).all()) and bool((sigma[:-1] >= sigma[1:] * 0.99).all())
    assert pixel.hooks.active == []
    with pytest.raises(InputError, match="per image"):
        jacobian_directions(pixel, _x_T(3), 500, k=3)
