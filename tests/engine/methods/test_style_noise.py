"""Method D: the fitted style distribution and the noise drawn from it."""

from __future__ import annotations

import pytest
import torch

from worker.engine.errors import InputError
from worker.engine.methods.style_noise import (
    StyleNoise,
    dct_matrix,
    fit_style_noise,
    initial_noise,
    sample_style,
)


def _styles(n: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    base = torch.tensor([0.6, -0.2, -0.7]).view(1, 3, 1, 1)
    return base + 0.3 * torch.randn(n, 3, 8, 8, generator=g)


def test_fit_is_the_per_element_mean_and_unbiased_variance() -> None:
    z = _styles()
    style = fit_style_noise(z)
    assert torch.allclose(style.mean, z.mean(0))
    assert torch.allclose(style.var, ((z - z.mean(0)) ** 2).sum(0) / (len(z) - 1))


def test_sampled_noise_has_the_fitted_mean_and_variance() -> None:
    style = fit_style_noise(_styles())
    x = sample_style(style, 20000, torch.Generator().manual_seed(1))
    assert (x.mean(0) - style.mean).abs().max() < 0.05
    assert ((x.var(0) / style.var) - 1).abs().max() < 0.1


def test_low_dct_frequencies_follow_their_full_covariance() -> None:
    z = _styles(12)
    style = fit_style_noise(z, dct_k=2)
    assert style.dct_cov is not None and style.dct_mean is not None
    assert style.dct_cov.shape == (12, 12)
    x = sample_style(style, 20000, torch.Generator().manual_seed(2))
    d = dct_matrix(8)
    low = (d @ x @ d.T)[..., :2, :2].reshape(len(x), -1)
    assert torch.allclose(low.mean(0), style.dct_mean, atol=0.05)
    assert torch.allclose(torch.cov(low.T), style.dct_cov, atol=0.05)
    round_trip = StyleNoise.from_tensors(style.tensors())
    assert round_trip.dct_k == 2


def test_dct_matrix_is_orthonormal() -> None:
    d = dct_matrix(8)
    assert torch.allclose(d @ d.T, torch.eye(8), atol=1e-6)


def test_signal_leak_form_mixes_with_fresh_noise() -> None:
    style = fit_style_noise(_styles())
    ab = 0.25
    direct = initial_noise(style, 4000, ab, "direct", torch.Generator().manual_seed(3))
    leak = initial_noise(style, 4000, ab, "signal_leak", torch.Generator().manual_seed(3))
    assert torch.allclose(direct.mean(0), style.mean, atol=0.1)
    assert torch.allclose(leak.mean(0), 0.5 * style.mean, atol=0.1)
    expected_var = ab * style.var + (1 - ab)
    assert ((leak.var(0) / expected_var) - 1).abs().mean() < 0.05


def test_refusals_name_the_field() -> None:
    with pytest.raises(InputError, match="images: need at least 2"):
        fit_style_noise(_styles(1))
    with pytest.raises(InputError, match="dct_k"):
        fit_style_noise(_styles(), dct_k=9)
    with pytest.raises(InputError, match="form"):
        initial_noise(fit_style_noise(_styles()), 1, 0.5, "other")  # type: ignore[arg-type]


def test_with_dct_the_samples_keep_the_datas_variance_not_twice_it() -> None:
    """Data whose variance is mostly per-image brightness (a low frequency) and a little
    texture: the samples' per-element and within-image variances match the data's. When
    mu and sigma were fitted on the whole z, the brightness variance was drawn twice
    (sample variance ~2x the data's, within-image variance ~40x)."""
    g = torch.Generator().manual_seed(3)
    n = 400
    brightness = 1.9 * torch.randn(n, 3, 1, 1, generator=g)
    z = brightness + 0.3 * torch.randn(n, 3, 8, 8, generator=g)
    style = fit_style_noise(z, dct_k=2, shrink=0.0)
    x = sample_style(style, 4000, torch.Generator().manual_seed(4))
    data_var, sample_var = float(z.var(0).mean()), float(x.var(0).mean())
    assert abs(sample_var / data_var - 1) < 0.1, (sample_var, data_var)
    data_within = float(z.flatten(2).var(-1).mean())
    sample_within = float(x.flatten(2).var(-1).mean())
    assert abs(sample_within / data_within - 1) < 0.15, (sample_within, data_within)
