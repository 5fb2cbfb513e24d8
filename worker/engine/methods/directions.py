"""Method E: interpretable h-space directions (Haas et al., 2023).

Edit rule (METHODS.md, section E): h_t <- h_t + s * dh_t at every step with
t >= t_edit; symmetric by default (eps from the edited h), asymmetric optional
(x0_hat from the edited eps, the direction term from the plain one).

Directions, one per grid step:

- supervised: dh_t = mean(h_t | pos) - mean(h_t | neg); conditioned (beyond the
  reference), one such difference per combination of other factors' values (a
  *stratum*), each image edited along its own stratum's;
- PCA: per step, the top-k principal components of h over N generated samples,
  std-scaled and sign-aligned across steps;
- Jacobian: per step, the top right singular vectors of f(h) = eps(x_t, t; h), by
  power iteration with Jacobian-vector and vector-Jacobian products; applied scaled
  by that step's singular value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from worker.engine.assets import grid_of, pack, unpack
from worker.engine.denoiser import Denoiser
from worker.engine.errors import InputError
from worker.engine.hspace import align_signs, pca_directions, power_iteration
from worker.engine.noise import Generators
from worker.engine.sampling import (
    ProgressFn,
    ddim_sample,
    ddim_sigma,
    ddim_step,
    reverse_steps,
)

Directions = Mapping[int, torch.Tensor]  # grid step -> dh_t, (*h_shape) or (B, *h_shape)


def supervised_directions(
    h_pos: Mapping[int, torch.Tensor], h_neg: Mapping[int, torch.Tensor]
) -> dict[int, torch.Tensor]:
    """dh_t = mean(h_t | pos) - mean(h_t | neg), per step; inputs (N, *h_shape) per step."""
    if set(h_pos) != set(h_neg):
        raise InputError("h_neg: needs the same steps as h_pos")
    return {t: h_pos[t].float().mean(0) - h_neg[t].float().mean(0) for t in h_pos}


def collect_h(
    denoiser: Denoiser,
    x_T: torch.Tensor,
    grid: list[int],
    *,
    eta: float = 1.0,
    generator: Generators = None,
    progress: ProgressFn | None = None,
) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """Sample from x_T recording h at every step; returns ({t: (B, *h)}, x_0)."""
    with torch.no_grad(), denoiser.hooks.capture_h("directions.collect", to_cpu=True) as cap:
        x0 = ddim_sample(denoiser, x_T, grid, eta=eta, generator=generator, progress=progress)
    return {t: h for t, h in cap.records}, x0


def pca_fit(
    h_by_step: Mapping[int, torch.Tensor], k: int
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Per step, k principal directions scaled by their std, signs aligned from the top down.

    Returns ({t: (k, *h_shape)}, {t: std (k,)}).
    """
    steps = sorted(h_by_step, reverse=True)
    raw = [pca_directions(h_by_step[t], k) for t in steps]
    aligned = align_signs([d for d, _ in raw])
    dirs = {
        t: d * std.reshape(-1, *([1] * (d.ndim - 1)))
        for t, d, (_, std) in zip(steps, aligned, raw, strict=True)
    }
    stds = {t: std for t, (_, std) in zip(steps, raw, strict=True)}
    return dirs, stds


def jacobian_directions(
    denoiser: Denoiser,
    x_t: torch.Tensor,
    t: int,
    *,
    k: int,
    iters: int = 50,
    tol: float = 1e-5,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k directions of f(h) = eps(x_t, t; h) for one image (batch of 1) at one step.

    Returns (u (k, *h_shape) unit-norm, sigma (k,)).
    """
    if x_t.shape[0] != 1:
        raise InputError(f"x_t: Jacobian directions are per image; got a batch of {x_t.shape[0]}")
    with torch.no_grad():
        state = denoiser.down_mid(x_t, t)
    h0 = state.h.detach().float()

    def f(h: torch.Tensor) -> torch.Tensor:
        return denoiser.up(state, h=h.reshape(h0.shape))

    def jvp(u: torch.Tensor) -> torch.Tensor:
        # forward-mode AD has no rule for the fused attention kernels: use the math one
        with sdpa_kernel([SDPBackend.MATH]):
            out: torch.Tensor = torch.func.jvp(f, (h0,), (u.reshape(h0.shape).float(),))[1]
        return out.reshape(-1)

    def vjp(v: torch.Tensor) -> torch.Tensor:
        pullback = torch.func.vjp(f, h0)[1]
        grad: torch.Tensor = pullback(v.reshape(x_t.shape).float())[0]
        return grad.reshape(-1)

    u, sigma = power_iteration(
        jvp, vjp, in_shape=(h0.numel(),), out_shape=(x_t.numel(),), k=k, iters=iters, tol=tol,
        generator=generator,
    )  # fmt: skip
    return u.reshape(k, *h0.shape[1:]), sigma


def jacobian_fit(
    denoiser: Denoiser,
    xs: list[torch.Tensor],
    grid: list[int],
    *,
    k: int,
    iters: int,
    apply: Literal["per_step", "one_step"] = "per_step",
    at_t: int | None = None,
    generator: torch.Generator | None = None,
    progress: ProgressFn | None = None,
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Jacobian directions of one image along its trajectory ``xs`` (x_t at each grid t).

    At every step, the top-k (u_t, sigma_t) by power iteration; each u_t's sign is
    arbitrary (a random start), so the signs are aligned to the top step's before
    anything is stored. Then, per step, the stored direction is
    - ``per_step``: u_t * sigma_t, each step's own vectors;
    - ``one_step``: u_{at_t} * sigma_t, one step's vectors at every step, scaled by each
      step's singular values (the reference's README edits); ``at_t`` defaults to the
      top step.
    Returns ({t: (k, *h)}, {t: sigma (k,)}).
    """
    if at_t is not None and at_t not in grid:
        raise InputError(f"jacobian_t: {at_t} is not a step of this grid; steps: {grid}")
    us: dict[int, torch.Tensor] = {}
    sigmas: dict[int, torch.Tensor] = {}
    for i, (t, x_t) in enumerate(zip(grid, xs, strict=True)):
        us[t], sigmas[t] = jacobian_directions(
            denoiser, x_t, t, k=k, iters=iters, generator=generator
        )
        if progress is not None:
            progress(i + 1, len(grid))
    top_down = sorted(grid, reverse=True)
    aligned = dict(zip(top_down, align_signs([us[t] for t in top_down]), strict=True))
    source = at_t if at_t is not None else top_down[0]

    def scaled(u: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return u * sigma.view(-1, *([1] * (u.ndim - 1)))

    if apply == "one_step":
        return {t: scaled(aligned[source], sigmas[t]) for t in grid}, sigmas
    return {t: scaled(aligned[t], sigmas[t]) for t in grid}, sigmas


def edit_with_direction(
    denoiser: Denoiser,
    x_T: torch.Tensor,
    grid: list[int],
    directions: Directions,
    scale: float,
    *,
    t_edit: int = 0,
    asymmetric: bool = False,
    eta: float = 0.0,
    generator: Generators = None,
    noises: list[torch.Tensor] | None = None,
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """Sample from x_T with h_t <- h_t + scale * dh_t at steps with t >= t_edit; x_0 (fp32).

    ``noises`` (one map per step, top first, with ``eta``) replay an edit-friendly DDPM
    inversion: at scale 0 the image comes back exactly, as the reference edits real
    images."""
    missing = [t for t in grid if t >= t_edit and t not in directions]
    if missing:
        raise InputError(f"directions: no direction for steps {missing[:5]}")
    x = x_T.to(device=denoiser.device, dtype=torch.float32)
    n = len(grid)
    for step in reverse_steps(grid, denoiser.schedule):
        i, t, ab_t, ab_s = step.i, step.t, step.ab_t, step.ab_s
        with torch.no_grad():
            if t >= t_edit and scale != 0.0:
                state = denoiser.down_mid(x, t)
                dh = directions[t].to(device=state.h.device, dtype=torch.float32)
                h_edit = state.h.float() + scale * dh
                eps_edit = denoiser.up(state, h=h_edit)
                eps, eps_x0 = (denoiser.up(state), eps_edit) if asymmetric else (eps_edit, None)
            else:
                eps, eps_x0 = denoiser.eps(x, t), None
        noise = None
        if noises is not None:
            noise = noises[i].to(x.device)
        elif ddim_sigma(ab_t, ab_s, eta) > 0:
            noise = denoiser.noise(x.shape, generator, x.device)
        x, _ = ddim_step(x, eps, ab_t, ab_s, eta=eta, noise=noise, eps_x0=eps_x0)
        if progress is not None:
            progress(i + 1, n)
    return x


@dataclass(frozen=True)
class Strata:
    """A conditioned fit's strata: direction k is for the images whose ``factors`` read
    ``values[k]`` (one value name per factor)."""

    factors: tuple[str, ...]
    values: tuple[tuple[str, ...], ...]

    def to_json(self) -> str:
        return json.dumps({"factors": list(self.factors), "values": [list(v) for v in self.values]})

    @classmethod
    def from_json(cls, text: str) -> Strata:
        try:
            raw = json.loads(text)
            strata = cls(tuple(raw["factors"]), tuple(tuple(v) for v in raw["values"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"asset: malformed strata ({exc})") from exc
        return strata


@dataclass
class DirectionsAsset:
    """A directions fit as stored: per grid step t, (k, *h) directions ("t<t>" tensors);
    with ``strata``, direction k belongs to stratum k (an edit picks it per image)."""

    kind: str  # pca, supervised or jacobian
    model: str
    grid: list[int]
    directions: dict[int, torch.Tensor]
    refine: int  # the fit's DDIM refinement (0 for assets from before it existed)
    strata: Strata | None = None

    @property
    def components(self) -> int:
        return int(next(iter(self.directions.values())).shape[0])

    def to_safetensors(self) -> bytes:
        meta = {
            "kind": self.kind,
            "grid": json.dumps(self.grid),
            "model": self.model,
            "components": str(self.components),
            "refine": str(self.refine),
        }
        if self.strata is not None:
            meta["strata"] = self.strata.to_json()
        return pack({f"t{t}": self.directions[t] for t in self.grid}, meta)

    @classmethod
    def from_safetensors(cls, data: bytes) -> DirectionsAsset:
        tensors, meta = unpack(data, "directions")
        dirs = {int(name[1:]): v for name, v in tensors.items() if name.startswith("t")}
        return cls(
            kind=meta.get("kind", "pca"),
            model=meta.get("model", ""),
            grid=grid_of(meta),
            directions=dirs,
            refine=int(meta.get("refine", "0")),
            strata=Strata.from_json(meta["strata"]) if "strata" in meta else None,
        )
