"""Method A: content injection in h-space (DiffStyle / InjectFusion, Jeong et al., WACV 2024).

The content of image C in the style of image S, feed-forward, on a frozen
unconditional model (METHODS.md, section A):

1. DDIM-invert C and S over the grid; keep S's x_T and C's h_t at every grid step.
2. Generate from S's x_T. At each *replace step* with t >= t_edit,
   h' = slerp(h, norm(h_c), g) (h the trajectory's own h, so the injection compounds),
   then the asymmetric step: x0_hat from eps~ (h'), the direction from eps (h).
   The replace steps are ``replace_steps`` evenly spaced steps of the generation grid
   (every step when the grid has no more): the reference generates over 1000 steps
   and injects at 50; the other steps are plain DDIM. So the number of injections,
   and the boost's total noise, do not grow with ``steps``.
3. Skip calibration with strength w > 0: P = x0_hat(eps), P~ = x0_hat(eps~)
   re-standardised to P's per-sample std around P~'s own mean (the reference's
   ``denoising_step``), dx = sqrt(ab_t)(P~ - P) + w sqrt(1 - ab_t)(eps~ - eps);
   x_t <- x_t + dx, then a plain U-Net call and a standard DDIM step, which replaces
   the damped one (no damping on top of a calibrated step).
4. Early-step damping on replace steps with t >= t_damp:
   x_s = sqrt(ab_s) x0_hat + lam sqrt(1 - ab_s) eps.
5. Quality boost: eta = 1 on replace steps with t <= t_boost.
6. An optional mask (at h's resolution) limits the injection to a region; inside it
   h' is the slerp, outside h is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from contract.methods.inject import InjectParams
from worker.engine.denoiser import Denoiser
from worker.engine.errors import InputError
from worker.engine.hspace import inject
from worker.engine.noise import Generators
from worker.engine.sampling import (
    ProgressFn,
    ddim_invert,
    ddim_sigma,
    ddim_step,
    predict_x0,
    reverse_steps,
)


def check_settings(settings: InjectParams, num_train_timesteps: int) -> None:
    """The parameters' ranges again, here in the model's own timestep scale: a model with
    T < 1000 narrows t_edit, t_boost and t_damp (a params object built with
    ``model_construct`` skips pydantic's checks, so every range is read here)."""
    T = num_train_timesteps
    if not 0.0 <= settings.g <= 1.0:
        raise InputError(f"g: must lie in [0, 1], got {settings.g}")
    for name in ("t_edit", "t_boost", "t_damp"):
        value = getattr(settings, name)
        if not 0 <= value <= T:
            raise InputError(f"{name}: must lie in [0, {T}], got {value}")
    if settings.w < 0:
        raise InputError(f"w: must be >= 0, got {settings.w}")
    if not 0.0 < settings.lam <= 1.0:
        raise InputError(f"lam: must lie in (0, 1], got {settings.lam}")
    if settings.replace_steps < 1:
        raise InputError(f"replace_steps: must be >= 1, got {settings.replace_steps}")


def replace_step_indices(n: int, replace_steps: int) -> set[int]:
    """Which of n generation steps (0 = the top step) are replace steps: ``replace_steps``
    evenly spaced ones, the top step first, or all n when there are no more."""
    if replace_steps >= n:
        return set(range(n))
    return {k * n // replace_steps for k in range(replace_steps)}


@dataclass
class ContentTrajectory:
    """C's h at every grid step (top included), as injection needs it."""

    grid: list[int]
    h: dict[int, torch.Tensor]
    x_T: torch.Tensor | None = None  # C's inverted x_T (injection itself starts from S's)


def content_trajectory(
    denoiser: Denoiser,
    x0_c: torch.Tensor,
    grid: list[int],
    progress: ProgressFn | None = None,
    *,
    refine: int,
) -> ContentTrajectory:
    """Invert C and record h at every grid step: n - 1 inversion calls plus one at the top
    (``refine``: fixed-point iterations per inversion step, see ``ddim_invert``)."""
    with torch.no_grad():
        traj = ddim_invert(
            denoiser, x0_c, grid, record_h=True, fixed_point_iters=refine, progress=progress
        )
        with denoiser.hooks.capture_h("inject.top") as cap:
            denoiser.eps(traj.x_T, grid[-1])
    hs = {t: h for t, h in zip(grid[:-1], traj.hs, strict=True)}
    hs[grid[-1]] = cap.tensors[-1]
    return ContentTrajectory(grid=grid, h=hs, x_T=traj.x_T)


def restandardise(p_tilde: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """P~ rescaled to P's per-sample std around P~'s own mean (the reference's rule)."""
    dims = tuple(range(1, p.ndim))
    sd = p.std(dims, keepdim=True)
    mu_t, sd_t = p_tilde.mean(dims, keepdim=True), p_tilde.std(dims, keepdim=True)
    return mu_t + (p_tilde - mu_t) * (sd / sd_t.clamp_min(1e-8))


def inject_content(
    denoiser: Denoiser,
    x_T_style: torch.Tensor,
    content: ContentTrajectory,
    settings: InjectParams,
    *,
    mask: torch.Tensor | None = None,
    masked_rows: torch.Tensor | None = None,
    generator: Generators = None,
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """Generate from the style image's x_T with C's h injected; returns x_0 (fp32).

    ``mask`` ((B or 1, 1, H, W) at h's resolution) makes the injection local (the
    reference's rule, see ``hspace.inject``), for the rows ``masked_rows`` names (all
    by default). ``settings`` is the method's parameters (only the generation's fields
    are read here: the inversion's ran before)."""
    check_settings(settings, denoiser.num_train_timesteps)
    grid = content.grid
    x = x_T_style.to(device=denoiser.device, dtype=torch.float32)
    n = len(grid)
    replace = replace_step_indices(n, settings.replace_steps)
    for k, step in enumerate(reverse_steps(grid, denoiser.schedule)):
        i, t, ab_t, ab_s = step.i, step.t, step.ab_t, step.ab_s
        replacing = k in replace
        eta = 1.0 if replacing and 0 < t <= settings.t_boost else 0.0
        calibrated = False
        with torch.no_grad():
            if replacing and t >= settings.t_edit:
                h_c = content.h[t].to(device=denoiser.device)
                state = denoiser.down_mid(x, t)
                h_edit = inject(state.h.float(), h_c, settings.g, mask, masked_rows)
                eps = denoiser.up(state)
                eps_edit = denoiser.up(state, h=h_edit)
                if settings.w > 0:  # skip calibration, then a plain step from the moved x_t
                    p = predict_x0(x, eps, ab_t)
                    p_tilde = restandardise(predict_x0(x, eps_edit, ab_t), p)
                    x = x + math.sqrt(ab_t) * (p_tilde - p)
                    x = x + settings.w * math.sqrt(1 - ab_t) * (eps_edit - eps)
                    eps = denoiser.eps(x, t)
                    eps_x0, calibrated = None, True
                elif not settings.asymmetric:  # outside the reference: x0 and direction from h'
                    eps, eps_x0 = eps_edit, None
                else:
                    eps_x0 = eps_edit
                    if settings.clip_x0 and denoiser.family == "pixel":
                        # the eps whose x0_hat is the clamped one: a small U-Net's edited
                        # eps at large t can throw x0_hat far outside the image range
                        x0c = predict_x0(x, eps_edit, ab_t).clamp(-1, 1)
                        eps_x0 = (x - math.sqrt(ab_t) * x0c) / math.sqrt(1 - ab_t)
            else:
                eps = denoiser.eps(x, t)
                eps_x0 = None
        noise = (
            denoiser.noise(x.shape, generator, x.device)
            if ddim_sigma(ab_t, ab_s, eta) > 0
            else None
        )
        damped = replacing and not calibrated and t >= settings.t_damp and settings.lam != 1.0
        if damped:
            x0 = predict_x0(x, eps if eps_x0 is None else eps_x0, ab_t)
            x = math.sqrt(ab_s) * x0 + settings.lam * math.sqrt(1 - ab_s) * eps
        else:
            x, _ = ddim_step(x, eps, ab_t, ab_s, eta=eta, noise=noise, eps_x0=eps_x0)
        if progress is not None:
            progress(i + 1, n)
    return x
