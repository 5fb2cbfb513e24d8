"""The tensor algebra of h-space edits, shared by methods A and E (METHODS.md).

===============  ==========================================================
code             paper
===============  ==========================================================
``h``            h_t, the mid-block output of the current trajectory
``h_c``          the content image's h_t (DiffStyle / InjectFusion)
``g``            gamma, the content ratio of the slerp
``N``            the other attributes' directions to project out (Haas)
===============  ==========================================================

Every function is per sample: norms and angles are taken over (C, H, W) of each
row of the batch, never across the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from worker.engine.errors import InputError


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (like.ndim - 1)))


def match_norm(h_c: torch.Tensor, h: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """InjectFusion's normalisation: h_c <- h_c ||h|| / ||h_c|| (L2 over C, H, W per sample)."""
    scale = _flat(h).norm(dim=1) / _flat(h_c).norm(dim=1).clamp_min(eps)
    return h_c * _per_sample(scale, h_c)


def slerp(h: torch.Tensor, h_c: torch.Tensor, g: float, lerp_below: float = 1e-4) -> torch.Tensor:
    """Spherical interpolation from h (g = 0) to h_c (g = 1).

    theta = arccos(<h / ||h||, h_c / ||h_c||>);
    h' = (sin((1 - g) theta) h + sin(g theta) h_c) / sin(theta).
    The reference code returns NaN when theta ~ 0 (sin(theta) = 0); there the two
    are parallel and we interpolate linearly, which slerp tends to as theta -> 0.
    """
    if not 0.0 <= g <= 1.0:
        raise InputError(f"g: the content ratio must lie in [0, 1], got {g}")
    a, b = _flat(h).double(), _flat(h_c).double()
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-30)
    theta = torch.arccos(cos.clamp(-1.0, 1.0))
    sin = torch.sin(theta)
    parallel = theta.abs() < lerp_below
    safe_sin = torch.where(parallel, torch.ones_like(sin), sin)
    wa = torch.where(parallel, 1.0 - g, torch.sin((1.0 - g) * theta) / safe_sin)
    wb = torch.where(parallel, torch.full_like(theta, g), torch.sin(g * theta) / safe_sin)
    out = _per_sample(wa, a) * a + _per_sample(wb, b) * b
    return out.reshape(h.shape).to(h.dtype)


def inject(
    h: torch.Tensor,
    h_c: torch.Tensor,
    g: float,
    mask: torch.Tensor | None = None,
    masked_rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """One injection step.

    Without a mask: normalise h_c to ||h||, slerp by g (InjectFusion's global rule).
    With ``mask`` ((B or 1, 1, H, W) at h's resolution, 1 where content goes): the
    reference's local rule, a slerp of the masked parts of h and h_c (no norm matching:
    the angle and the norms are those of the region), h kept outside the mask:
    ``h' = m slerp(m h, m h_c, g) + (1 - m) h``. ``masked_rows`` ((B,) bool) says which
    rows the mask is for; the others take the global rule (a batch may mix both).
    """
    mixed = slerp(h, match_norm(h_c, h), g)
    if mask is None:
        return mixed
    if mask.shape[-2:] != h.shape[-2:]:
        raise InputError(
            f"mask: expected {tuple(h.shape[-2:])} at h's resolution, got {tuple(mask.shape[-2:])}"
        )
    m = mask.to(device=h.device, dtype=h.dtype)
    local = m * slerp(m * h, m * h_c, g) + (1 - m) * h
    if masked_rows is None:
        return local
    rows = masked_rows.to(device=h.device).view(-1, *([1] * (h.ndim - 1)))
    return torch.where(rows, local, mixed)


def project_out(n: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """Haas et al.: n' = n - N^T (N N^T)^-1 N n, orthogonal to every row of N.

    ``n`` is one direction (any shape), ``others`` (K, *n.shape) the directions to
    remove; a least-squares solve stands in for the inverse (stable when N is near
    rank-deficient).
    """
    v = n.reshape(-1).double()
    N = others.reshape(others.shape[0], -1).double()
    coeffs: torch.Tensor = torch.linalg.lstsq(N @ N.T, (N @ v).unsqueeze(1)).solution.squeeze(1)
    return (v - N.T @ coeffs).reshape(n.shape).to(n.dtype)


def project_out_joint(
    dirs: dict[int, torch.Tensor], others: dict[int, torch.Tensor]
) -> dict[int, torch.Tensor]:
    """The reference's disentangling: one solve over every step at once.

    Each direction is the concatenation of its per-step vectors (all steps flattened
    into one long vector), and so is each direction to remove; ``project_out`` then
    runs once on those. The result is orthogonal to every other direction as a whole,
    not at each step (``project_out`` per step is the stricter, per-step variant).
    ``dirs``: {t: (k, *h)}; ``others``: {t: (K, *h)}, the same steps.
    """
    steps = sorted(dirs)
    k = next(iter(dirs.values())).shape[0]
    flat = torch.cat([dirs[t].reshape(k, -1) for t in steps], dim=1)
    count = next(iter(others.values())).shape[0]
    removed = torch.cat([others[t].reshape(count, -1) for t in steps], dim=1)
    clean = torch.stack([project_out(row, removed) for row in flat])
    sizes = [dirs[t][0].numel() for t in steps]
    parts = torch.split(clean, sizes, dim=1)
    return {t: part.reshape(dirs[t].shape) for t, part in zip(steps, parts, strict=True)}


def pca_directions(samples: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k principal directions of (N, *shape) samples and their standard deviations.

    Returns (directions (k, *shape) unit-norm, std (k,)), std = sigma / sqrt(N - 1).
    """
    n = samples.shape[0]
    if not 1 <= k <= min(n, samples[0].numel()):
        raise InputError(f"k: expected 1..{min(n, samples[0].numel())} components, got {k}")
    x = _flat(samples).double()
    x = x - x.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    std = s[:k] / max(n - 1, 1) ** 0.5
    return vh[:k].reshape(k, *samples.shape[1:]).to(samples.dtype), std.to(samples.dtype)


def align_signs(
    directions: list[torch.Tensor], to: Literal["first", "previous"] = "first"
) -> list[torch.Tensor]:
    """Flip each step's components so each agrees in sign with the first step's (the
    reference's rule, Haas et al.) or with the previous step's.

    A power iteration or an eigensolver returns each vector up to its sign; unaligned,
    the per-step contributions of one direction cancel. Aligning to the previous step
    chains the comparison, so on a trajectory whose directions drift, late steps can
    end up opposed to the first; aligning to the first compares every step with one.
    """
    out = [directions[0]]
    for d in directions[1:]:
        ref = _flat(out[0] if to == "first" else out[-1])
        sign = torch.sign((ref * _flat(d)).sum(1))
        sign[sign == 0] = 1
        out.append(d * _per_sample(sign, d))
    return out


def power_iteration(
    jvp: Callable[[torch.Tensor], torch.Tensor],
    vjp: Callable[[torch.Tensor], torch.Tensor],
    in_shape: tuple[int, ...],
    out_shape: tuple[int, ...],
    k: int,
    iters: int = 50,
    tol: float = 1e-5,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k right singular vectors of J by power iteration on J J^T, with deflation.

    ``jvp(u) = J u`` (u in in_shape), ``vjp(v) = J^T v`` (v in out_shape). Each round:
    v <- J J^T v, minus its projection on the vectors already found, normalised;
    stop when v moves less than ``tol`` or after ``iters``. The direction in the
    input space is u = J^T v / sigma, sigma = ||J^T v||.
    Returns (u (k, *in_shape) unit-norm, sigma (k,)).
    """
    found_v: list[torch.Tensor] = []
    us, sigmas = [], []
    for _ in range(k):
        v = torch.randn(out_shape, generator=generator, dtype=torch.float64)
        v = v / v.norm()
        for _ in range(iters):
            w = jvp(vjp(v.float()).double().float()).double()
            for prev in found_v:
                w = w - (w * prev).sum() * prev
            w_norm = w.norm()
            if w_norm == 0:
                break
            w = w / w_norm
            done = (w - v).norm() < tol
            v = w
            if done:
                break
        found_v.append(v)
        jt_v = vjp(v.float()).double()
        sigma = jt_v.norm()
        us.append((jt_v / sigma.clamp_min(1e-30)).reshape(in_shape))
        sigmas.append(sigma)
    return torch.stack(us).float(), torch.stack(sigmas).float()
