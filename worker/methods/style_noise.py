"""Method D: fit a style's initial-noise distribution, and generate from it."""

from __future__ import annotations

import time

from contract.methods.style_noise import (
    STYLE_GENERATE,
    STYLE_NOISE,
    StyleGenerateParams,
    StyleNoiseFitParams,
)
from worker.engine import Denoiser, EngineError
from worker.engine.images import to_pil
from worker.engine.methods.style_noise import StyleNoiseAsset, fit_style_noise, initial_noise
from worker.engine.sampling import ddim_sample
from worker.engine.schedule import timestep_grid
from worker.methods.common import load_asset
from worker.methods.handler import (
    AssetOutput,
    Batch,
    Handler,
    JobOutput,
    ProgressFn,
    RunContext,
    png,
    refused,
)


def run_style_fit(
    denoiser: Denoiser, batch: Batch[StyleNoiseFitParams], progress: ProgressFn, ctx: RunContext
) -> list[JobOutput]:
    """One job -> a style-noise asset (mu, sigma^2, optional low-DCT cov)."""
    (job,) = batch.jobs
    p = job.params
    start = time.perf_counter()
    z = denoiser.encode(job.images["images"])
    try:
        style = fit_style_noise(z, p.dct_k)
    except EngineError as exc:
        raise refused(f"params.{exc}") from exc
    progress(1, 1)
    metrics = {
        "images": int(z.shape[0]),
        "mean_sigma": round(float(style.var.sqrt().mean()), 4),
        "fit_seconds": round(time.perf_counter() - start, 3),
    }
    data = StyleNoiseAsset(denoiser.name, style).to_safetensors()
    out = AssetOutput(p.name, data, p.model_dump(mode="json"), metrics)
    return [JobOutput(images=[], metrics=metrics, asset=out)]


def run_style_generate(
    denoiser: Denoiser, batch: Batch[StyleGenerateParams], progress: ProgressFn, ctx: RunContext
) -> list[JobOutput]:
    """One sample per job, starting from the style's distribution."""
    p = batch.shared
    style = load_asset(
        ctx, p.asset, StyleNoiseAsset, "style-noise", "params.asset", batch, denoiser.name
    ).style
    if tuple(style.mean.shape) != denoiser.sample_shape:
        raise refused(
            f"params.asset: fitted for x_T of shape {tuple(style.mean.shape)}, "
            f"model {denoiser.name} samples {denoiser.sample_shape}"
        )
    if p.t_start is not None and p.t_start >= denoiser.num_train_timesteps:
        raise refused(
            f"params.t_start: model {denoiser.name} has timesteps 0 to "
            f"{denoiser.num_train_timesteps - 1}, got {p.t_start}"
        )
    t_start = p.t_start if p.form == "signal_leak" else None  # the direct form starts at T
    grid = timestep_grid(p.steps, denoiser.num_train_timesteps, p.grid, t_max=t_start)
    generators = batch.generators()
    ab_T = float(denoiser.schedule.alphas_cumprod[grid[-1]])
    n = len(batch.jobs)
    x_T = initial_noise(style, n, ab_T, p.form, generators, offset=denoiser.noise_offset)
    cond = None
    if denoiser.conditional:
        prompts = [job.params.prompt for job in batch.jobs]
        cond = denoiser.conditioning(prompts, guidance_scale=p.guidance_scale)
    x0 = ddim_sample(
        denoiser, x_T, grid, cond=cond, eta=p.eta, generator=generators, progress=progress
    )
    return [JobOutput(images=[png(im)]) for im in to_pil(denoiser.decode(x0))]


HANDLERS = (
    Handler(STYLE_NOISE, StyleNoiseFitParams, run_style_fit),
    Handler(
        STYLE_GENERATE, StyleGenerateParams, run_style_generate,
        batch_fields=("asset", "form", "steps", "grid", "eta", "guidance_scale", "t_start"),
    ),
)  # fmt: skip
