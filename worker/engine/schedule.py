"""Noise schedule and timestep grids.

Notation (METHODS.md):

=============  =======================================
code           paper
=============  =======================================
``ab[t]``      alpha_bar_t, cumulative product of 1 - beta
``ab(-1)``     1.0: the clean image, after the last step
``grid``       increasing train timesteps t_1 < ... < t_n
=============  =======================================

A grid is always increasing. Sampling walks it from the top down to -1 (clean);
inversion walks it from the bottom (the clean image placed at ``grid[0]``) up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from worker.engine.errors import InputError

GridKind = Literal["leading", "linspace"]


@dataclass(frozen=True)
class NoiseSchedule:
    """alpha_bar over the train timesteps, held in fp64 on the CPU and read as fp32 scalars."""

    alphas_cumprod: torch.Tensor  # (T,) float64

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def ab(self, t: int) -> float:
        """alpha_bar at train timestep t; t = -1 means the clean image (alpha_bar = 1)."""
        if t < 0:
            return 1.0
        return float(self.alphas_cumprod[t])

    @classmethod
    def from_betas(cls, betas: torch.Tensor) -> NoiseSchedule:
        return cls(torch.cumprod(1.0 - betas.to(torch.float64), dim=0))

    @classmethod
    def from_scheduler_config(cls, config: dict[str, object]) -> NoiseSchedule:
        """Build alpha_bar from a diffusers scheduler config (DDPM/DDIM/PNDM share the keys)."""
        T = int(config.get("num_train_timesteps", 1000))  # type: ignore[call-overload]
        kind = str(config.get("beta_schedule", "linear"))
        start = float(config.get("beta_start", 1e-4))  # type: ignore[arg-type]
        end = float(config.get("beta_end", 0.02))  # type: ignore[arg-type]
        if config.get("trained_betas") is not None:
            betas = torch.tensor(config["trained_betas"], dtype=torch.float64)
        elif kind == "linear":
            betas = torch.linspace(start, end, T, dtype=torch.float64)
        elif kind == "scaled_linear":
            betas = torch.linspace(start**0.5, end**0.5, T, dtype=torch.float64) ** 2
        elif kind == "squaredcos_cap_v2":
            betas = _cosine_betas(T)
        else:
            raise InputError(
                f"beta_schedule: {kind!r} is not supported; expected linear, scaled_linear "
                "or squaredcos_cap_v2"
            )
        return cls.from_betas(betas)


def _cosine_betas(T: int, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal (2021) eq. 17, as diffusers' ``squaredcos_cap_v2``."""

    def f(u: float) -> float:
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    return torch.tensor(
        [min(1 - f((i + 1) / T) / f(i / T), max_beta) for i in range(T)], dtype=torch.float64
    )


def timestep_grid(
    num_steps: int, num_train_timesteps: int, kind: GridKind = "leading", t_max: int | None = None
) -> list[int]:
    """Increasing timesteps for ``num_steps`` model calls.

    - ``leading``: diffusers' ``set_timesteps`` grid, ``arange(n) * (T // n)`` (0, 20, ..., 980).
    - ``linspace``: the reference grid of Asyrp/DiffStyle/BoundaryDiffusion,
      ``[int(s + 1e-6) for s in linspace(0, 1, n) * t_max]`` (0, ..., t_max), t_max
      defaulting to T - 1. The 1e-6 matters: without it 62.99999... truncates to 62, and
      1000 steps over [0, 999] lost 63, 126, 252, 504 and 509 as duplicates.

    With ``t_max`` given, a leading grid is cut to the steps <= t_max (sampling from an
    intermediate timestep); a linspace grid is spread over [0, t_max].
    """
    T = num_train_timesteps
    if num_steps < 1 or num_steps > T:
        raise InputError(f"steps: must be in [1, {T}], got {num_steps}")
    if t_max is not None and not 0 <= t_max < T:
        raise InputError(f"t_max: must be in [0, {T - 1}], got {t_max}")
    if kind == "leading":
        stride = T // num_steps
        grid = [i * stride for i in range(num_steps)]
        if t_max is not None:
            grid = [t for t in grid if t <= t_max]
    elif kind == "linspace":
        top = T - 1 if t_max is None else t_max
        if num_steps == 1:
            grid = [top]
        else:
            points = np.linspace(0, 1, num_steps) * top
            grid = sorted({int(s + 1e-6) for s in points.tolist()})
    else:
        raise InputError(f"grid: unknown kind {kind!r}; expected leading or linspace")
    if not grid:
        raise InputError(f"t_max: {t_max} is below the first step of a {num_steps}-step grid")
    return grid
