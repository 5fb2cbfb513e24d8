"""Method E: fit h-space directions (PCA, supervised, Jacobian) and move images along them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from contract.methods.directions import (
    DIRECTION,
    DIRECTIONS,
    DirectionEditParams,
    DirectionFitParams,
)
from worker.engine import Denoiser
from worker.engine.hspace import project_out, project_out_joint
from worker.engine.images import to_pil
from worker.engine.methods.directions import (
    DirectionsAsset,
    collect_h,
    edit_with_direction,
    jacobian_fit,
    pca_fit,
    supervised_directions,
)
from worker.engine.methods.inject import content_trajectory
from worker.engine.sampling import ddim_invert, ddpm_invert
from worker.engine.schedule import timestep_grid
from worker.methods.common import classifier_scores, load_asset, require_unconditional
from worker.methods.handler import (
    AssetOutput,
    Batch,
    Handler,
    JobOutput,
    PreparedJob,
    ProgressFn,
    RunContext,
    chunk_tick,
    phase,
    png,
    refused,
)


def load_directions(
    ctx: RunContext, asset_id: str, where: str, batch: Batch[Any], model: str
) -> DirectionsAsset:
    return load_asset(ctx, asset_id, DirectionsAsset, "directions", where, batch, model)


def generated_h(
    denoiser: Denoiser, count: int, grid: list[int], seed: int, progress: Callable[[int, int], None]
) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """h at every step of ``count`` samples generated with eta = 1, and the samples."""
    gen = torch.Generator().manual_seed(seed)
    hs: dict[int, list[torch.Tensor]] = {}
    outs = []
    n, chunks = len(grid), -(-count // 64)
    for chunk, start in enumerate(range(0, count, 64)):
        x_T = denoiser.noise(
            (min(64, count - start), *denoiser.sample_shape), gen, torch.device("cpu")
        )
        h, x0 = collect_h(
            denoiser, x_T, grid, eta=1.0, generator=gen,
            progress=chunk_tick(progress, chunk * n, chunks * n),
        )  # fmt: skip
        for t, v in h.items():
            hs.setdefault(t, []).append(v.float().cpu())
        outs.append(denoiser.decode(x0).cpu())
    return {t: torch.cat(v) for t, v in hs.items()}, torch.cat(outs)


def other_labels(factor: str | None, images: torch.Tensor, ctx: RunContext) -> torch.Tensor:
    """(N, F) the classifier's labels of every factor but ``factor`` (and its valid head)."""
    assert ctx.classifier is not None  # classifier_scores refused already
    with torch.no_grad():
        pred = ctx.classifier.predict(images.clamp(-1, 1))
    names = [f for f in pred if f not in (factor, "valid")]
    return torch.stack([pred[f][0].cpu() for f in names], dim=1)


def balanced_pairs(
    score: torch.Tensor, others: torch.Tensor, top_k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``top_k`` (positive, negative) pairs, equal on every other factor's label.

    Positives (score >= 0.5) are taken from the highest score down; each is paired with
    the lowest-scored unused negative (score < 0.5) of the same labels, where there is
    one. Both sets then hold every combination of the other factors equally often."""
    free: dict[tuple[int, ...], list[int]] = {}
    for i in torch.argsort(score).tolist():  # lowest score first
        if float(score[i]) < 0.5:
            free.setdefault(tuple(others[i].tolist()), []).append(i)
    pos: list[int] = []
    neg: list[int] = []
    for i in torch.argsort(score, descending=True).tolist():
        if float(score[i]) < 0.5 or len(pos) >= top_k:
            break
        match = free.get(tuple(others[i].tolist()))
        if match:
            pos.append(i)
            neg.append(match.pop(0))
    return torch.tensor(pos, dtype=torch.long), torch.tensor(neg, dtype=torch.long)


def supervised_by_classifier(
    p: DirectionFitParams, h: dict[int, torch.Tensor], images: torch.Tensor, ctx: RunContext
) -> tuple[dict[int, torch.Tensor], dict[str, Any]]:
    score = classifier_scores(p.factor, p.value, images, ctx)
    order = torch.argsort(score, descending=True)
    if p.balance:
        pos, neg = balanced_pairs(score, other_labels(p.factor, images, ctx), p.top_k)
    else:
        k = min(p.top_k, len(order) // 2)
        pos, neg = order[:k], order[-k:]  # top-K vs bottom-K, as Haas et al.
    if len(pos) == 0:
        raise refused(
            f"params.value: no sample read as {p.factor}={p.value} has a counterpart on "
            "the other factors; raise params.samples"
        )
    dirs = supervised_directions(
        {t: v[pos] for t, v in h.items()}, {t: v[neg] for t, v in h.items()}
    )
    counts = {
        "positives": len(pos),
        "negatives": len(neg),
        "score_positives": round(float(score[pos].mean()), 3),
        "score_negatives": round(float(score[neg].mean()), 3),
    }
    return {t: d.unsqueeze(0) for t, d in dirs.items()}, counts


def fit_directions(
    denoiser: Denoiser,
    job: PreparedJob[DirectionFitParams],
    grid: list[int],
    progress: ProgressFn,
    ctx: RunContext,
) -> tuple[dict[int, torch.Tensor], dict[str, Any]]:
    """({t: (k, *h)}, metrics) of the job's kind, before any projection."""
    p, seed = job.params, job.payload.seed
    sampling = phase(progress, "sampling")
    if p.kind == "pca":
        h, _ = generated_h(denoiser, p.samples, grid, seed, sampling)
        dirs, stds = pca_fit(h, p.k)
        return dirs, {"std_top_step": [round(float(v), 4) for v in stds[grid[-1]]]}
    if p.kind == "supervised" and p.positives:
        pos, neg = (
            content_trajectory(
                denoiser,
                denoiser.encode(job.images[role]),
                grid,
                refine=p.refine,
                progress=phase(progress, f"inverting {role}"),
            )
            for role in ("positives", "negatives")
        )
        dirs = {t: d.unsqueeze(0) for t, d in supervised_directions(pos.h, neg.h).items()}
        return dirs, {"positives": len(p.positives), "negatives": len(p.negatives)}
    if p.kind == "supervised":
        h, images = generated_h(denoiser, p.samples, grid, seed, sampling)
        return supervised_by_classifier(p, h, images, ctx)
    # jacobian, of one image at every step of its inversion
    if p.jacobian_t is not None and p.jacobian_t not in grid:
        raise refused(
            f"params.jacobian_t: {p.jacobian_t} is not a step of this {p.steps}-step "
            f"{p.grid} grid; its steps: {grid}"
        )
    x0 = denoiser.encode(job.images["image"])
    traj = ddim_invert(
        denoiser, x0, grid, fixed_point_iters=p.refine, progress=phase(progress, "inversion")
    )
    dirs, sigmas = jacobian_fit(
        denoiser, traj.xs, grid, k=p.k, iters=p.iters, apply=p.jacobian_apply,
        at_t=p.jacobian_t, generator=torch.Generator().manual_seed(seed),
        progress=phase(progress, "jacobian"),
    )  # fmt: skip
    return dirs, {"sigma_top_step": [round(float(v), 4) for v in sigmas[grid[-1]]]}


def without_others(
    dirs: dict[int, torch.Tensor],
    batch: Batch[DirectionFitParams],
    grid: list[int],
    ctx: RunContext,
    model: str,
) -> dict[int, torch.Tensor]:
    """``dirs`` with every ``project_out`` asset's directions removed, all at once:
    projecting against one asset after another leaves the result orthogonal to the
    last only."""
    p = batch.shared
    if not p.project_out:
        return dirs
    removed: dict[int, list[torch.Tensor]] = {t: [] for t in grid}
    for other_id in p.project_out:
        others = load_directions(ctx, other_id, "params.project_out", batch, model).directions
        lacking = [t for t in grid if t not in others]
        if lacking:
            raise refused(
                f"params.project_out: asset {other_id} has no directions for steps "
                f"{lacking[:5]}; fit it with the same steps and grid"
            )
        for t in grid:
            removed[t].append(others[t].float())
    if p.project_out_solve == "joint":  # the reference's
        return project_out_joint(dirs, {t: torch.cat(removed[t]) for t in grid})
    return {t: torch.stack([project_out(d, torch.cat(removed[t])) for d in dirs[t]]) for t in grid}


def run_direction_fit(
    denoiser: Denoiser, batch: Batch[DirectionFitParams], progress: ProgressFn, ctx: RunContext
) -> list[JobOutput]:
    """One job (fits do not batch) -> a directions asset."""
    require_unconditional(denoiser)
    (job,) = batch.jobs
    p = job.params
    grid = timestep_grid(p.steps, denoiser.num_train_timesteps, p.grid)
    start = time.perf_counter()
    dirs, metrics = fit_directions(denoiser, job, grid, progress, ctx)
    dirs = without_others(dirs, batch, grid, ctx, denoiser.name)
    metrics["fit_seconds"] = round(time.perf_counter() - start, 2)
    asset = DirectionsAsset(p.kind, denoiser.name, grid, dirs, p.refine)
    out = AssetOutput(p.name, asset.to_safetensors(), p.model_dump(mode="json"), metrics)
    return [JobOutput(images=[], metrics=metrics, asset=out)]


def run_direction_edit(
    denoiser: Denoiser, batch: Batch[DirectionEditParams], progress: ProgressFn, ctx: RunContext
) -> list[JobOutput]:
    """Invert on the asset's grid, sample with h + s * dh at t >= t_edit."""
    require_unconditional(denoiser)
    p = batch.shared
    asset = load_directions(ctx, p.asset, "params.asset", batch, denoiser.name)
    if p.component >= asset.components:
        raise refused(f"params.component: the asset has {asset.components} directions")
    grid = asset.grid
    n, done = len(grid), 0

    def tick(_i: int, _n: int) -> None:
        nonlocal done
        done += 1
        progress(done, 2 * n - 1)

    x0 = denoiser.encode(batch.stack("image"))
    noises, eta = None, 0.0
    if p.inversion == "ddpm":  # edit-friendly: the reference's inversion of real images
        maps = ddpm_invert(denoiser, x0, grid, generator=batch.generators(), progress=tick)
        x_T, noises, eta = maps.x_T, maps.zs, maps.eta
    else:
        x_T = ddim_invert(denoiser, x0, grid, fixed_point_iters=p.refine, progress=tick).x_T
    chosen = {t: d[p.component] for t, d in asset.directions.items()}
    out = edit_with_direction(
        denoiser, x_T, grid, chosen, p.scale, t_edit=p.t_edit, asymmetric=p.asymmetric,
        eta=eta, noises=noises, progress=tick,
    )  # fmt: skip
    return [JobOutput(images=[png(im)]) for im in to_pil(denoiser.decode(out))]


HANDLERS = (
    Handler(DIRECTIONS, DirectionFitParams, run_direction_fit),
    Handler(
        DIRECTION, DirectionEditParams, run_direction_edit,
        batch_fields=("asset", "component", "scale", "t_edit", "asymmetric", "inversion",
                      "refine"),
    ),
)  # fmt: skip
