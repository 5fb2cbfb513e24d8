"""Method C: learn per-step prompt-mixing weights (lam), and sample with them."""

from __future__ import annotations

import time

import torch

from contract.methods.mixing import LAM, MIX, LamFitParams, MixParams
from worker.engine import Denoiser
from worker.engine.images import to_pil
from worker.engine.methods.mixing import (
    ClassifierScorer,
    Corrections,
    LamAsset,
    Sampler,
    Scorer,
    WithContent,
    optimise_lam,
    real_image_corrections,
    reference_init,
    sample_mixed,
)
from worker.engine.schedule import timestep_grid
from worker.methods.common import load_asset, require_text_model
from worker.methods.handler import (
    AssetOutput,
    Batch,
    Handler,
    JobOutput,
    PreparedJob,
    ProgressFn,
    RunContext,
    phase,
    png,
    refused,
)


def scorer(ctx: RunContext, name: str, content: str = "scorer", temperature: float = 1.0) -> Scorer:
    """The loss's image-text scorer, with VGG16's content term where asked."""
    if name == "clip":
        if ctx.clip is None:
            raise refused(
                "params.scorer: this worker has no CLIP folder (EDITSERVE_CLIP); use 'classifier'"
            )
        base: Scorer = ctx.clip
    elif ctx.classifier is None:
        raise refused(
            "params.scorer: this worker has no classifier for the loss (EDITSERVE_CLASSIFIER)"
        )
    else:
        base = ClassifierScorer(ctx.classifier, temperature)
    if content != "vgg":
        return base
    if ctx.vgg is None:
        raise refused(
            "params.content: this worker has no VGG16 weights (EDITSERVE_VGG); use 'scorer'"
        )
    return WithContent(base, ctx.vgg)


def seed_noise(denoiser: Denoiser, seeds: range) -> torch.Tensor:
    """x_T of each seed, one row each, as a mix job on that seed draws it."""
    return seed_noises(denoiser, seeds, 0)[0]


def seed_noises(
    denoiser: Denoiser, seeds: range, steps: int
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """x_T of each seed and ``steps`` step noise maps (top step first), one row per seed,
    each row drawn in order from its seed's generator, as a mix job on that seed draws
    them: a lam fitted on seeds s..s+k and a mix on seed s share s's noises."""
    shape, cpu = (1, *denoiser.sample_shape), torch.device("cpu")
    rows = []
    for s in seeds:
        gen = torch.Generator().manual_seed(s)
        rows.append([denoiser.noise(shape, gen, cpu) for _ in range(steps + 1)])
    x_T = torch.cat([r[0] for r in rows])
    return x_T, [torch.cat([r[k + 1] for r in rows]) for k in range(steps)]


def mix_start(
    denoiser: Denoiser,
    job: PreparedJob[LamFitParams] | PreparedJob[MixParams],
    grid: list[int],
    c_n: torch.Tensor,
    uncond: torch.Tensor | None,
    guidance: float,
    *,
    correct_share: float,
    refine: int,
    sampler: Sampler,
    clip_x0: bool,
    eta: float,
    seeds: int = 1,
) -> tuple[torch.Tensor, list[torch.Tensor] | None, Corrections | None]:
    """x_T of the job's seed (and of the ``seeds - 1`` next ones, one row each, as a mix
    job on that seed starts), or of its real image (inverted, with per-step corrections);
    with ``eta`` > 0 also the fixed noise map of each step."""
    n = len(grid) if eta > 0 else 0
    if "image" not in job.images:
        x_T, noises = seed_noises(denoiser, range(job.payload.seed, job.payload.seed + seeds), n)
        return x_T, noises or None, None
    gen = torch.Generator().manual_seed(job.payload.seed)
    x0 = denoiser.encode(job.images["image"])
    fixed = [denoiser.noise(x0.shape, gen, x0.device) for _ in range(n)] or None
    corrections = real_image_corrections(
        denoiser, x0, grid, c_n, uncond=uncond, guidance=guidance,
        correct_share=correct_share, refine=refine, sampler=sampler, clip_x0=clip_x0,
        eta=eta, noises=fixed, generator=gen,
    )  # fmt: skip
    return corrections.x_T, fixed, corrections


def run_lam_fit(
    denoiser: Denoiser, batch: Batch[LamFitParams], progress: ProgressFn, ctx: RunContext
) -> list[JobOutput]:
    """One job -> a lam asset, learned on its seeds (their mean loss) or its image."""
    require_text_model(denoiser)
    (job,) = batch.jobs
    p = job.params
    if p.clip_x0 and denoiser.family != "pixel":  # the API refuses it first (409)
        raise refused("params.clip_x0: pixel models only; a latent model's x_0 is not an image")
    start = time.perf_counter()
    grid = timestep_grid(p.steps, denoiser.num_train_timesteps)
    c_n = denoiser.encode_prompt([p.neutral])
    uncond = denoiser.encode_prompt([""]) if p.guidance_scale != 1.0 else None
    # a real image: the noisiest 2/3 of the steps corrected, as a mix job does by default
    x_T, noises, corrections = mix_start(
        denoiser, job, grid, c_n, uncond, p.guidance_scale,
        correct_share=MixParams.model_fields["correct_share"].default,
        refine=p.refine, sampler=p.sampler, clip_x0=p.clip_x0, eta=p.eta, seeds=p.seeds,
    )  # fmt: skip
    fit = optimise_lam(
        denoiser, x_T, grid, p.neutral, p.target, scorer(ctx, p.scorer, p.content, p.temperature),
        lam0=reference_init(len(grid), p.noisy_share), epochs=p.epochs, lr=p.lr,
        content_weight=p.content_weight, guidance=p.guidance_scale,
        corrections=corrections, sampler=p.sampler, clip_x0=p.clip_x0, eta=p.eta,
        noises=noises, progress=phase(progress, "optimising lam"),
    )  # fmt: skip
    metrics = {
        "loss_first": round(fit.losses[0], 4),
        "loss_last": round(fit.losses[-1], 4),
        "fit_seconds": round(time.perf_counter() - start, 2),
    }
    asset = LamAsset(
        denoiser.name, grid, fit.lam, p.neutral, p.target, p.guidance_scale, p.sampler,
        p.clip_x0, p.eta,
    )  # fmt: skip
    out = AssetOutput(p.name, asset.to_safetensors(), p.model_dump(mode="json"), metrics)
    assert fit.edited is not None
    return [JobOutput(images=[png(im) for im in to_pil(fit.edited)], metrics=metrics, asset=out)]


def run_mix(
    denoiser: Denoiser, batch: Batch[MixParams], progress: ProgressFn, ctx: RunContext
) -> list[JobOutput]:
    """The learned lam on each job's seed (or its real image)."""
    require_text_model(denoiser)
    p = batch.shared
    asset = load_asset(ctx, p.asset, LamAsset, "lam", "params.asset", batch, denoiser.name)
    guidance = asset.guidance_scale
    c_n = denoiser.encode_prompt([asset.neutral])
    c_t = denoiser.encode_prompt([asset.target])
    uncond = denoiser.encode_prompt([""]) if guidance != 1.0 else None
    outputs = []
    for k, job in enumerate(batch.jobs):  # corrections are per image: one run per job
        x_T, noises, corrections = mix_start(
            denoiser, job, asset.grid, c_n, uncond, guidance,
            correct_share=p.correct_share, refine=p.refine, sampler=asset.sampler,
            clip_x0=asset.clip_x0, eta=asset.eta,
        )  # fmt: skip
        x0 = sample_mixed(
            denoiser, x_T, asset.grid, c_n, c_t, asset.lam, uncond=uncond, guidance=guidance,
            corrections=corrections, sampler=asset.sampler, clip_x0=asset.clip_x0,
            eta=asset.eta, noises=noises,
        )  # fmt: skip
        outputs.append(JobOutput(images=[png(im) for im in to_pil(denoiser.decode(x0))]))
        progress(k + 1, len(batch.jobs))
    return outputs


HANDLERS = (
    Handler(LAM, LamFitParams, run_lam_fit),
    Handler(MIX, MixParams, run_mix, batch_fields=("asset", "correct_share", "refine")),
)
