"""Invert an image and regenerate it: the engine's round-trip check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from worker.engine.denoiser import Conditioning, Denoiser
from worker.engine.images import psnr
from worker.engine.sampling import Generators, ProgressFn, ddim_invert, ddim_sample, ddpm_invert
from worker.engine.schedule import GridKind, timestep_grid

InversionKind = Literal["ddim", "ddpm"]


@dataclass
class Reconstruction:
    images: torch.Tensor  # (B, C, H, W) fp32 in [-1, 1], unclamped
    psnr_db: list[float]


def reconstruct(
    denoiser: Denoiser,
    images: torch.Tensor,
    *,
    steps: int = 50,
    inversion: InversionKind = "ddim",
    grid: GridKind = "leading",
    cond: Conditioning | None = None,
    generator: Generators = None,
    progress: ProgressFn | None = None,
) -> Reconstruction:
    """Invert ``images`` over ``steps`` steps and sample back; PSNR against the input.

    ``ddim``: deterministic DDIM inversion (approximate). ``ddpm``: edit-friendly DDPM
    inversion, exact up to float precision and to the VAE for latent models.
    """
    denoiser.check_images(images)
    timesteps = timestep_grid(steps, denoiser.num_train_timesteps, grid)
    total = 2 * steps - 1 if inversion == "ddim" else 2 * steps
    done = 0

    def tick(_i: int, _n: int) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    x0 = denoiser.encode(images)
    with torch.no_grad():
        if inversion == "ddim":
            traj = ddim_invert(denoiser, x0, timesteps, cond=cond, progress=tick)
            out = ddim_sample(denoiser, traj.x_T, timesteps, cond=cond, progress=tick)
        else:
            maps = ddpm_invert(
                denoiser, x0, timesteps, cond=cond, generator=generator, progress=tick
            )
            out = ddim_sample(
                denoiser,
                maps.x_T,
                timesteps,
                cond=cond,
                eta=maps.eta,
                noises=maps.zs,
                progress=tick,
            )
    decoded = denoiser.decode(out)
    return Reconstruction(images=decoded, psnr_db=psnr(decoded, images))
