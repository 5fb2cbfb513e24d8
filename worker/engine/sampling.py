"""DDIM sampling and inversion, edit-friendly DDPM inversion, and the asymmetric step.

All share one signature style (k-diffusion's ``sampling.py``): the denoiser, the
starting tensor and the increasing timestep grid first; keyword options after;
every random draw from the passed ``torch.Generator``; a ``progress(done, total)``
callback after each U-Net step (it may raise to cancel).

Notation, as in METHODS.md:

===============  ===========================================================
code             paper
===============  ===========================================================
``ab_t, ab_s``   alpha_bar at the current step t and the next step s
``x0``           x0_hat = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)
``sigma``        eta sqrt((1 - ab_s)/(1 - ab_t)) sqrt(1 - ab_t/ab_s)
``z``            the variance noise of a stochastic step
===============  ===========================================================
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from worker.engine.denoiser import Conditioning, Denoiser
from worker.engine.errors import InputError
from worker.engine.noise import Generators
from worker.engine.schedule import NoiseSchedule

ProgressFn = Callable[[int, int], None]
HEdit = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass
class Trajectory:
    """A DDIM inversion: ``xs[k]`` is x at ``grid[k]`` (``xs[0]`` the clean x_0 placed at grid[0]).

    ``hs[k]`` and ``eps[k]`` are h and eps of the U-Net call at ``grid[k]`` (k < n - 1),
    recorded when asked for.
    """

    grid: list[int]
    xs: list[torch.Tensor]
    hs: list[torch.Tensor] = field(default_factory=list)
    eps: list[torch.Tensor] = field(default_factory=list)

    @property
    def x_T(self) -> torch.Tensor:
        return self.xs[-1]


@dataclass
class NoiseMaps:
    """Edit-friendly DDPM inversion: x_T and one noise map per sampling step (top down)."""

    grid: list[int]
    x_T: torch.Tensor
    zs: list[torch.Tensor]
    eta: float = 1.0


def _check_grid(grid: Sequence[int], T: int) -> list[int]:
    grid = list(grid)
    if not grid:
        raise InputError("grid: needs at least one timestep")
    if any(b <= a for a, b in itertools.pairwise(grid)):
        raise InputError(f"grid: timesteps must increase strictly, got {grid[:8]}...")
    if grid[0] < 0 or grid[-1] >= T:
        raise InputError(f"grid: timesteps must lie in [0, {T - 1}]")
    return grid


def _etas(eta: float | Sequence[float], n: int) -> list[float]:
    if isinstance(eta, int | float):
        etas = [float(eta)] * n
    else:
        etas = [float(e) for e in eta]
        if len(etas) != n:
            raise InputError(f"eta: expected one value or {n} (one per step), got {len(etas)}")
    if any(e < 0 for e in etas):
        raise InputError("eta: must be >= 0")
    return etas


@dataclass(frozen=True)
class Step:
    """One sampling step from t down to s (s = -1: the clean image), the i-th of n."""

    i: int
    t: int
    s: int
    ab_t: float
    ab_s: float


def reverse_steps(grid: Sequence[int], schedule: NoiseSchedule) -> Iterator[Step]:
    """The sampling steps over an increasing grid, top down."""
    for i, k in enumerate(range(len(grid) - 1, -1, -1)):
        t, s = grid[k], grid[k - 1] if k > 0 else -1
        yield Step(i, t, s, schedule.ab(t), schedule.ab(s))


def ddim_sigma(ab_t: float, ab_s: float, eta: float) -> float:
    """sigma of a DDIM step t -> s (Song et al. 2021, eq. 16)."""
    if eta == 0.0:
        return 0.0
    return eta * math.sqrt((1 - ab_s) / (1 - ab_t)) * math.sqrt(max(1 - ab_t / ab_s, 0.0))


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, ab_t: float) -> torch.Tensor:
    """x0_hat(x_t, eps) = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)."""
    return (x_t - math.sqrt(1 - ab_t) * eps) / math.sqrt(ab_t)


def ddim_step(
    x_t: torch.Tensor,
    eps: torch.Tensor,
    ab_t: float,
    ab_s: float,
    *,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
    eps_x0: torch.Tensor | None = None,
    clip_x0: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM step t -> s; returns (x_s, x0_hat). Works upward too (inversion, eta = 0).

    1. x0_hat from ``eps_x0`` when given (Asyrp: the edited eps), else from ``eps``;
       with ``clip_x0``, clamped to the pixel range [-1, 1] (diffusers' ``clip_sample``,
       whose direction term keeps the model's eps, as here).
    2. x_s = sqrt(ab_s) x0_hat + sqrt(1 - ab_s - sigma^2) eps + sigma z.

    A noise map given for a step with sigma = 0 (the last step of an edit-friendly
    inversion) is added as it is: it then holds the residual that makes the step exact.
    """
    x0 = predict_x0(x_t, eps if eps_x0 is None else eps_x0, ab_t)
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
    sigma = ddim_sigma(ab_t, ab_s, eta)
    direction = math.sqrt(max(1 - ab_s - sigma**2, 0.0)) * eps
    x_s = math.sqrt(ab_s) * x0 + direction
    if noise is not None:
        x_s = x_s + (sigma if sigma > 0 else 1.0) * noise
    return x_s, x0


def ddim_sample(
    denoiser: Denoiser,
    x: torch.Tensor,
    grid: Sequence[int],
    *,
    cond: Conditioning | None = None,
    eta: float | Sequence[float] = 0.0,
    generator: Generators = None,
    noises: Sequence[torch.Tensor] | None = None,
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """Denoise x at ``grid[-1]`` down to the clean x_0 (t = -1), one U-Net call per grid step.

    To start from an intermediate timestep t0, pass a grid whose top is t0. ``eta`` is one
    value or one per step (top step first); ``noises`` fixes the variance noise of each
    step (top first), as an edit-friendly inversion returns them.
    """
    grid = _check_grid(grid, denoiser.num_train_timesteps)
    n = len(grid)
    etas = _etas(eta, n)
    if noises is not None and len(noises) != n:
        raise InputError(f"noises: expected {n} noise maps (one per step), got {len(noises)}")
    x = x.to(device=denoiser.device, dtype=torch.float32)
    for step in reverse_steps(grid, denoiser.schedule):
        i, t, ab_t, ab_s = step.i, step.t, step.ab_t, step.ab_s
        eps = denoiser.eps(x, t, cond)
        noise = None
        if noises is not None:
            noise = noises[i].to(x.device)
        elif ddim_sigma(ab_t, ab_s, etas[i]) > 0:
            noise = denoiser.noise(x.shape, generator, x.device)
        x, _ = ddim_step(x, eps, ab_t, ab_s, eta=etas[i], noise=noise)
        if progress is not None:
            progress(i + 1, n)
    return x


def ddim_invert(
    denoiser: Denoiser,
    x0: torch.Tensor,
    grid: Sequence[int],
    *,
    cond: Conditioning | None = None,
    record_h: bool = False,
    record_eps: bool = False,
    fixed_point_iters: int = 0,
    progress: ProgressFn | None = None,
) -> Trajectory:
    """Deterministic DDIM inversion x_0 -> x_{grid[-1]} (n - 1 U-Net calls).

    The reference codes' convention: x_0 stands at ``grid[0]``; step k uses eps at
    (x_{grid[k-1]}, grid[k-1]) to move to grid[k]. With ``record_h`` the h of every
    call is kept (fp32), as method A needs the content image's h_t.

    ``fixed_point_iters`` J > 0 refines each step (J more U-Net calls per step): the
    sampler will go back from s = grid[k] with eps(x_s, s), not with the eps at t =
    grid[k-1] that the plain step used, so x_s is iterated as
    ``x_s <- ddim_step(x_t, eps(x_s, s), ab_t, ab_s)``, whose fixed point the DDIM
    sampler maps back to x_t exactly (fixed-point inversion, as in Pan et al. 2023 and
    ReNoise). h and eps are recorded from each step's first call, as without it.
    """
    if fixed_point_iters < 0:
        raise InputError("fixed_point_iters: must be >= 0")
    grid = _check_grid(grid, denoiser.num_train_timesteps)
    denoiser.check_sample(x0, what="x_0")
    sched = denoiser.schedule
    x = x0.to(device=denoiser.device, dtype=torch.float32)
    traj = Trajectory(grid=grid, xs=[x])
    total = len(grid) - 1
    for k in range(1, len(grid)):
        t, s = grid[k - 1], grid[k]
        if record_h:
            with denoiser.hooks.capture_h("ddim_invert.h") as cap:
                eps = denoiser.eps(x, t, cond)
            traj.hs.append(cap.tensors[-1])
        else:
            eps = denoiser.eps(x, t, cond)
        if record_eps:
            traj.eps.append(eps)
        x_t = x
        x, _ = ddim_step(x_t, eps, sched.ab(t), sched.ab(s))
        for _ in range(fixed_point_iters):
            x, _ = ddim_step(x_t, denoiser.eps(x, s, cond), sched.ab(t), sched.ab(s))
        traj.xs.append(x)
        if progress is not None:
            progress(k, total)
    return traj


def ddpm_invert(
    denoiser: Denoiser,
    x0: torch.Tensor,
    grid: Sequence[int],
    *,
    cond: Conditioning | None = None,
    eta: float = 1.0,
    generator: Generators = None,
    progress: ProgressFn | None = None,
) -> NoiseMaps:
    """Edit-friendly DDPM inversion (Huberman-Spiegelglas et al., CVPR 2024, eq. 6).

    1. Draw every x_t ~ q(x_t | x_0) independently: x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) n_t.
    2. For each step t -> s, mu = the DDIM mean of x_t, z = (x_s - mu) / sigma.
    Sampling with ``ddim_sample(..., eta=eta, noises=zs)`` from x_T returns x_0 exactly
    (to float precision): each step lands on the drawn x_s by construction.
    """
    if eta <= 0:
        raise InputError(
            "eta: edit-friendly inversion needs eta > 0 (noise maps are scaled by sigma)"
        )
    grid = _check_grid(grid, denoiser.num_train_timesteps)
    denoiser.check_sample(x0, what="x_0")
    sched = denoiser.schedule
    x0 = x0.to(device=denoiser.device, dtype=torch.float32)
    xs = {
        t: math.sqrt(sched.ab(t)) * x0
        + math.sqrt(1 - sched.ab(t)) * denoiser.noise(x0.shape, generator, x0.device)
        for t in grid
    }
    xs[-1] = x0
    zs: list[torch.Tensor] = []
    n = len(grid)
    for step in reverse_steps(grid, sched):
        i, t, s = step.i, step.t, step.s
        eps = denoiser.eps(xs[t], t, cond)
        mu, _ = ddim_step(xs[t], eps, step.ab_t, step.ab_s, eta=eta)
        sigma = ddim_sigma(step.ab_t, step.ab_s, eta)
        zs.append((xs[s] - mu) / sigma if sigma > 0 else xs[s] - mu)
        if progress is not None:
            progress(i + 1, n)
    return NoiseMaps(grid=grid, x_T=xs[grid[-1]], zs=zs, eta=eta)


def asymmetric_eps(
    denoiser: Denoiser,
    x_t: torch.Tensor,
    t: int,
    edit_h: HEdit,
    *,
    cond: Conditioning | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """eps from h and eps~ from h' = edit_h(h, t), the down path and mid block run once.

    Returns (eps, eps_edit, h, h_edit).
    """
    state = denoiser.down_mid(x_t, t, cond)
    h_edit = edit_h(state.h, t)
    eps = denoiser.up(state)
    eps_edit = denoiser.up(state, h=h_edit)
    return eps, eps_edit, state.h, h_edit


def asymmetric_step(
    denoiser: Denoiser,
    x_t: torch.Tensor,
    t: int,
    s: int,
    edit_h: HEdit,
    *,
    cond: Conditioning | None = None,
    eta: float = 0.0,
    generator: Generators = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The asymmetric reverse step of Asyrp (Kwon et al., ICLR 2023, eq. 4).

    x0_hat comes from the edited eps~ (h'), the direction term from the original eps.
    Returns (x_s, x0_hat).
    """
    eps, eps_edit, _, _ = asymmetric_eps(denoiser, x_t, t, edit_h, cond=cond)
    ab_t, ab_s = denoiser.schedule.ab(t), denoiser.schedule.ab(s)
    noise = (
        denoiser.noise(x_t.shape, generator, eps.device)
        if ddim_sigma(ab_t, ab_s, eta) > 0
        else None
    )
    return ddim_step(
        x_t.to(eps.device, torch.float32), eps, ab_t, ab_s, eta=eta, noise=noise, eps_x0=eps_edit
    )
