"""Invert an image and regenerate it: the engine's round-trip check.

Split in two so the worker can cache the first half: ``invert`` (the costly,
reusable part: x_T, plus the noise maps of an edit-friendly inversion) and
``regenerate`` (sampling back from it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from worker.engine.denoiser import Conditioning, Denoiser
from worker.engine.images import psnr
from worker.engine.noise import Generators
from worker.engine.sampling import ProgressFn, ddim_invert, ddim_sample, ddpm_invert
from worker.engine.schedule import GridKind, timestep_grid

InversionKind = Literal["ddim", "ddpm"]


@dataclass
class Inversion:
    """What sampling needs to come back: x_T and, for ``ddpm``, one noise map per step."""

    kind: InversionKind
    grid: list[int]
    x_T: torch.Tensor  # (B, ...) fp32
    zs: list[torch.Tensor] | None = None  # ddpm only, top step first, each (B, ...)
    eta: float = 0.0

    def rows(self) -> list[Inversion]:
        """One Inversion per sample (to cache them one image at a time)."""
        return [
            Inversion(
                self.kind,
                self.grid,
                self.x_T[i : i + 1],
                None if self.zs is None else [z[i : i + 1] for z in self.zs],
                self.eta,
            )
            for i in range(self.x_T.shape[0])
        ]

    @staticmethod
    def stack(parts: list[Inversion]) -> Inversion:
        first = parts[0]
        zs = None
        if first.zs is not None:
            zs = [
                torch.cat([p.zs[k] for p in parts if p.zs is not None])
                for k in range(len(first.zs))
            ]
        return Inversion(first.kind, first.grid, torch.cat([p.x_T for p in parts]), zs, first.eta)

    @property
    def nbytes(self) -> int:
        total = self.x_T.element_size() * self.x_T.nelement()
        for z in self.zs or []:
            total += z.element_size() * z.nelement()
        return total


@dataclass
class Reconstruction:
    images: torch.Tensor  # (B, C, H, W) fp32 in [-1, 1], unclamped
    psnr_db: list[float]


def invert(
    denoiser: Denoiser,
    images: torch.Tensor,
    *,
    steps: int = 50,
    inversion: InversionKind = "ddim",
    grid: GridKind = "leading",
    cond: Conditioning | None = None,
    generator: Generators = None,
    refine: int,
    progress: ProgressFn | None = None,
) -> Inversion:
    """``ddim``: deterministic DDIM inversion (approximate; ``refine`` fixed-point
    iterations per step make it near exact). ``ddpm``: edit-friendly, exact."""
    denoiser.check_images(images)
    timesteps = timestep_grid(steps, denoiser.num_train_timesteps, grid)
    x0 = denoiser.encode(images)
    with torch.no_grad():
        if inversion == "ddim":
            traj = ddim_invert(
                denoiser, x0, timesteps, cond=cond, fixed_point_iters=refine, progress=progress
            )
            return Inversion("ddim", timesteps, traj.x_T)
        maps = ddpm_invert(
            denoiser, x0, timesteps, cond=cond, generator=generator, progress=progress
        )
        return Inversion("ddpm", timesteps, maps.x_T, maps.zs, maps.eta)


def regenerate(
    denoiser: Denoiser,
    inv: Inversion,
    *,
    cond: Conditioning | None = None,
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """Sample back from an inversion; decoded images in [-1, 1] (fp32, unclamped)."""
    with torch.no_grad():
        out = ddim_sample(
            denoiser, inv.x_T, inv.grid, cond=cond, eta=inv.eta, noises=inv.zs, progress=progress
        )
    return denoiser.decode(out)


def reconstruct(
    denoiser: Denoiser,
    images: torch.Tensor,
    *,
    steps: int = 50,
    inversion: InversionKind = "ddim",
    grid: GridKind = "leading",
    cond: Conditioning | None = None,
    generator: Generators = None,
    refine: int,
    progress: ProgressFn | None = None,
) -> Reconstruction:
    """Invert ``images`` over ``steps`` steps and sample back; PSNR against the input."""
    total = 2 * steps - 1 if inversion == "ddim" else 2 * steps
    done = 0

    def tick(_i: int, _n: int) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    inv = invert(
        denoiser, images, steps=steps, inversion=inversion, grid=grid, cond=cond,
        generator=generator, refine=refine, progress=tick,
    )  # fmt: skip
    decoded = regenerate(denoiser, inv, cond=cond, progress=tick)
    return Reconstruction(images=decoded, psnr_db=psnr(decoded, images))
