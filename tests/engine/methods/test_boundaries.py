"""Method B: boundaries, the one-step move to a signed distance, the mixing-step search."""

from __future__ import annotations

import pytest
import torch

from worker.engine import Denoiser
from worker.engine.errors import InputError
from worker.engine.methods.boundaries import (
    edit_across,
    find_mixing_step,
    fit_boundary,
    invert_to,
    pick_mixing_step,
)


def _separable(n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 2
    x = torch.randn(n, 3, 4, 4, generator=g)
    x[:, 0, 0, 0] += 4.0 * (2 * labels - 1) + 1.5  # the hyperplane is off the origin
    return x, labels


def test_svm_separates_and_keeps_the_intercept() -> None:
    x, y = _separable()
    b = fit_boundary(x, y)
    assert b.accuracy >= 0.95 and b.train_accuracy >= 0.95
    assert abs(float(b.normal.norm()) - 1) < 1e-5 and b.normal.shape == (3, 4, 4)
    assert abs(b.offset) > 0.1  # not through the origin: the intercept is kept
    assert ((b.distance(x) > 0).long() == y).float().mean() >= 0.95


def test_moving_to_a_distance_lands_there_and_only_moves_along_the_normal() -> None:
    x, y = _separable()
    b = fit_boundary(x, y)
    for d in (-3.0, 0.0, 2.5):
        moved = b.move_to(x[:8], d)
        assert torch.allclose(b.distance(moved), torch.full((8,), d), atol=1e-4)
        delta = (moved - x[:8]).reshape(8, -1)
        along = delta @ b.normal.reshape(-1)
        assert torch.allclose(delta, along[:, None] * b.normal.reshape(1, -1), atol=1e-5)


def test_one_class_is_refused() -> None:
    x, _ = _separable()
    with pytest.raises(InputError, match="both classes"):
        fit_boundary(x, torch.zeros(len(x)))


def test_mixing_step_search_on_synthetic_radii() -> None:
    reference = (1.0, 0.01)
    radius = {0: (0.6, 0.2), 100: (0.8, 0.1), 200: (0.95, 0.03), 300: (0.99, 0.015),
              400: (1.005, 0.012), 500: (1.0, 0.011)}  # fmt: skip
    assert pick_mixing_step(radius, reference, tol=0.02) == 300
    assert pick_mixing_step(radius, reference, tol=0.1) == 200
    # a close step followed by a far one does not count: the chain must stay mixed
    radius[400] = (1.2, 0.01)
    assert pick_mixing_step(radius, reference, tol=0.02) == 500
    assert pick_mixing_step({0: (0.5, 0.3), 10: (0.7, 0.2)}, reference, 0.02) == 10


def test_edit_across_on_a_tiny_model(pixel: Denoiser) -> None:
    g = torch.Generator().manual_seed(1)
    images = torch.rand(12, 3, 16, 16, generator=g) * 2 - 1
    images[6:, 0] = 0.9  # a "red" class
    search = find_mixing_step(pixel, images, steps=6, tol=0.05, generator=g, refine=0)
    assert search.t0 in search.radius and search.reference[0] == pytest.approx(1.0, abs=0.02)
    mean, std = search.radius[search.t0]
    close = abs(mean - search.reference[0]) <= 0.05 and abs(std - search.reference[1]) <= 0.05
    assert search.found == close
    x_t0, h, grid = invert_to(pixel, images, 400, steps=5, refine=0)
    assert grid[-1] == 400 and h.shape == (12, *pixel.h_shape)
    labels = (torch.arange(12) >= 6).long()
    bx, bh = fit_boundary(x_t0, labels, held_out=0.0), fit_boundary(h, labels, held_out=0.0)
    plain = edit_across(pixel, x_t0[:2], grid, bx, float(bx.distance(x_t0[:1])[0]), eta=0.0)
    out = edit_across(pixel, x_t0[:2], grid, bx, 5.0, h_boundary=bh, eta=0.0)
    assert out.shape == (2, 3, 16, 16) and not torch.allclose(out, plain)
    # the h move on its own (x moved alike): h taken well across its boundary changes eps
    far = float(bh.distance(h[:2]).abs().max()) + 10.0
    x_only = edit_across(pixel, x_t0[:2], grid, bx, 5.0, eta=0.0)
    h_too = edit_across(pixel, x_t0[:2], grid, bx, 5.0, h_boundary=bh, h_distance=far, eta=0.0)
    assert float((h_too - x_only).abs().max()) > 1e-3
    assert pixel.hooks.active == []
    with pytest.raises(InputError, match="boundary: fitted on x of shape"):
        edit_across(pixel, h[:1], grid, bx, 0.0)


def test_the_intercept_is_unpenalised_so_the_distance_means_what_it_says() -> None:
    """Two classes split at x_0 = 50, far from the origin. LinearSVC penalised its
    intercept like a weight: the hyperplane's offset came out near 0 (b / ||w|| of
    0.000-0.003 on the shipped model) and the signed distance was off by ~50."""
    g = torch.Generator().manual_seed(1)
    n = 120
    labels = torch.arange(n) % 2
    x = 0.3 * torch.randn(n, 2, 2, 2, generator=g)
    x[:, 0, 0, 0] = 50.0 + (2 * labels - 1) * (1.0 + torch.rand(n, generator=g))
    b = fit_boundary(x, labels)
    assert b.accuracy == 1.0
    assert abs(b.offset + 50.0 * float(b.normal.reshape(-1)[0])) < 0.5, b.offset
    # a point on the split is at distance ~0
    mid = torch.zeros(1, 2, 2, 2)
    mid[0, 0, 0, 0] = 50.0
    assert abs(float(b.distance(mid))) < 0.5


def test_unbalanced_classes_report_balanced_accuracy_and_the_majority_baseline() -> None:
    g = torch.Generator().manual_seed(2)
    n = 200
    labels = (torch.rand(n, generator=g) < 0.25).long()  # 1 in 4 positive, as red of 4 colours
    x = torch.randn(n, 3, 4, 4, generator=g)
    x[:, 0, 0, 0] += 3.0 * (2 * labels - 1)
    b = fit_boundary(x, labels, held_out=0.3)
    assert 0.6 < b.majority_baseline < 0.9
    assert b.balanced_accuracy > 0.9 and b.accuracy > b.majority_baseline
