"""Method D: style-specific initial noise (Diffusion in Style, Everaert et al. 2023).

Fit (METHODS.md, section D): from a few style images' latents z_i (pixels in
[-1, 1] for pixel models, ``mode() * scaling_factor`` for latent ones), the
per-element mean mu and unbiased variance sigma^2 (C x H x W). Optionally the
lowest k x k 2-D DCT frequencies of each channel get a full covariance (shrunk
towards its diagonal, since a few images cannot fill a C*k*k covariance).

Start of generation, two forms:

- direct: ``x_T = mu + sigma * z``;
- signal leak: ``x_T = sqrt(ab_T) (mu + sigma * z) + sqrt(1 - ab_T) eps``.

With the DCT part (``dct_k`` > 0), the image is split as the signal-leak reference
splits it: z = LF(z) + (z - LF(z)), LF keeping the lowest k x k DCT coefficients of
each channel. mu and sigma^2 are fitted on the high-frequency residual z - LF(z), the
low coefficients get a full covariance, and a draw is ``mu + sigma * z`` with its low
frequencies replaced by a draw from that Gaussian. (Fitting mu and sigma on the whole
z counted the low frequencies' variance twice: once in sigma, spread over every
frequency, and again in their own draw; on data whose variance is mostly per-image
brightness, the samples' variance came out about twice the data's.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from worker.engine.assets import pack, unpack
from worker.engine.errors import InputError
from worker.engine.noise import Generators, prior_noise, randn

Form = Literal["direct", "signal_leak"]


def dct_matrix(n: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix D (n x n): coefficients = D @ x, x = D.T @ coefficients."""
    k = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    i = torch.arange(n, dtype=torch.float64).unsqueeze(0)
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.float()


def _low_dct(x: torch.Tensor, k: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C*k*k): the lowest k x k DCT coefficients of each channel."""
    dh, dw = dct_matrix(x.shape[-2]), dct_matrix(x.shape[-1])
    coeffs = dh @ x.float() @ dw.T
    return coeffs[..., :k, :k].reshape(x.shape[0], -1)


def _set_low_dct(x: torch.Tensor, low: torch.Tensor, k: int) -> torch.Tensor:
    dh, dw = dct_matrix(x.shape[-2]), dct_matrix(x.shape[-1])
    coeffs = dh @ x.float() @ dw.T
    coeffs[..., :k, :k] = low.reshape(x.shape[0], x.shape[1], k, k)
    return dh.T @ coeffs @ dw


@dataclass
class StyleNoise:
    mean: torch.Tensor  # (C, H, W)
    var: torch.Tensor  # (C, H, W), unbiased
    dct_k: int = 0
    dct_mean: torch.Tensor | None = None  # (C*k*k,)
    dct_cov: torch.Tensor | None = None  # (C*k*k, C*k*k)
    count: int = 0

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"mean": self.mean, "var": self.var}
        if self.dct_mean is not None and self.dct_cov is not None:
            out.update(dct_mean=self.dct_mean, dct_cov=self.dct_cov)
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], count: int = 0) -> StyleNoise:
        dct_mean, dct_cov = tensors.get("dct_mean"), tensors.get("dct_cov")
        k = 0
        if dct_mean is not None:
            k = math.isqrt(dct_mean.numel() // tensors["mean"].shape[0])
        return cls(tensors["mean"], tensors["var"], k, dct_mean, dct_cov, count)


def fit_style_noise(z: torch.Tensor, dct_k: int = 0, shrink: float = 0.1) -> StyleNoise:
    """mu and the unbiased sigma^2 of (N, C, H, W) latents; optional low-DCT covariance."""
    if z.ndim != 4 or z.shape[0] < 2:
        raise InputError(f"images: need at least 2 style images, got {z.shape[0]}")
    if not 0 <= dct_k <= min(z.shape[-2:]):
        raise InputError(f"dct_k: must lie in [0, {min(z.shape[-2:])}], got {dct_k}")
    z = z.float()
    if not dct_k:
        return StyleNoise(z.mean(0), z.var(0, unbiased=True), count=z.shape[0])
    low = _low_dct(z, dct_k)
    high = z - _set_low_dct(torch.zeros_like(z), low, dct_k)  # z - LF(z)
    style = StyleNoise(high.mean(0), high.var(0, unbiased=True), dct_k=dct_k, count=z.shape[0])
    if dct_k:
        cov = torch.cov(low.T.double())
        cov = (1 - shrink) * cov + shrink * torch.diag(torch.diag(cov))  # Ledoit-Wolf-like
        style.dct_mean, style.dct_cov = low.mean(0), cov.float()
    return style


def sample_style(style: StyleNoise, n: int, generator: Generators = None) -> torch.Tensor:
    """n draws of ``mu + sigma * z`` (low DCT frequencies from their full covariance)."""
    device = style.mean.device
    z = randn((n, *style.mean.shape), generator, device)
    x = style.mean + style.var.clamp_min(0).sqrt() * z
    if style.dct_k and style.dct_mean is not None and style.dct_cov is not None:
        dim = style.dct_mean.numel()
        eye = 1e-6 * torch.eye(dim, dtype=torch.float64)
        chol = torch.linalg.cholesky(style.dct_cov.double() + eye).float()
        w = randn((n, dim), generator, device)
        low = style.dct_mean + w @ chol.T
        x = _set_low_dct(x, low, style.dct_k)
    return x


def initial_noise(
    style: StyleNoise,
    n: int,
    alpha_bar_T: float,
    form: Form = "direct",
    generator: Generators = None,
    offset: float = 0.0,
) -> torch.Tensor:
    """x_T for generation in the style: the direct or the signal-leak form.

    The signal-leak form's noise is the model's own (``offset``: its training offset
    noise, see ``prior_noise``).
    """
    drawn = sample_style(style, n, generator)
    if form == "direct":
        return drawn
    if form == "signal_leak":
        eps = prior_noise(drawn.shape, generator, drawn.device, offset)
        return math.sqrt(alpha_bar_T) * drawn + math.sqrt(1 - alpha_bar_T) * eps
    raise InputError(f"form: expected direct or signal_leak, got {form!r}")


@dataclass
class StyleNoiseAsset:
    """A style-noise fit as stored: the distribution, and the model it is in the space of."""

    model: str
    style: StyleNoise

    def to_safetensors(self) -> bytes:
        meta = {"kind": "style-noise", "model": self.model, "count": str(self.style.count)}
        return pack(self.style.tensors(), meta)

    @classmethod
    def from_safetensors(cls, data: bytes) -> StyleNoiseAsset:
        tensors, meta = unpack(data, "style-noise")
        count = int(meta.get("count", "0"))
        return cls(model=meta.get("model", ""), style=StyleNoise.from_tensors(tensors, count))
