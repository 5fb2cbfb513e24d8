"""Method B: fit boundaries at the mixing step, and move images across them."""

from __future__ import annotations

import time
from typing import Any

import torch

from contract.methods.boundaries import (
    BOUNDARY,
    BOUNDARY_EDIT,
    BoundaryEditParams,
    BoundaryFitParams,
)
from worker.engine import Denoiser, EngineError
from worker.engine.images import to_pil
from worker.engine.methods.boundaries import (
    BoundaryAsset,
    edit_across,
    find_mixing_step,
    fit_boundary,
    invert_to,
)
from worker.methods.common import classifier_scores, generate, load_asset, require_unconditional
from worker.methods.handler import (
    AssetOutput,
    Batch,
    Handler,
    JobOutput,
    ProgressFn,
    RunContext,
    phase,
    png,
    refused,
)


def run_boundary_fit(
    denoiser: Denoiser, batch: Batch[BoundaryFitParams], progress: ProgressFn, ctx: RunContext
) -> list[JobOutput]:
    """One job -> a boundary asset (x_t0 and h boundaries, t0, accuracies)."""
    require_unconditional(denoiser)
    (job,) = batch.jobs
    p, seed = job.params, job.payload.seed
    start = time.perf_counter()
    if p.positives:
        pos, neg = job.images["positives"], job.images["negatives"]
        images = torch.cat([pos, neg])
        labels = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).long()
    else:
        images = generate(denoiser, p.samples, 25, seed, progress)
        labels = (classifier_scores(p.factor, p.value, images, ctx) > 0.5).long()
    x0 = denoiser.encode(images)
    search = None
    t0 = p.t0
    if t0 is None:
        search = find_mixing_step(
            denoiser, x0, steps=p.steps, tol=p.tol, refine=p.refine,
            generator=torch.Generator().manual_seed(seed),
            progress=phase(progress, "mixing-step search"),
        )  # fmt: skip
        t0 = search.t0
    x_t0, h, grid = invert_to(
        denoiser, x0, t0, p.steps, p.refine, progress=phase(progress, "inversion to t0")
    )
    try:
        bx = fit_boundary(x_t0, labels, held_out=p.held_out, c=p.c, seed=seed)
        bh = fit_boundary(h, labels, held_out=p.held_out, c=p.c, seed=seed)
    except EngineError as exc:
        raise refused(f"params.{exc}") from exc
    # the fit's images' median |signed distance|: the unit an edit's distance is best
    # chosen in (on x; h moves by the same d unless h_scaling says ratio)
    scale_x = float(bx.distance(x_t0).abs().median())
    scale_h = float(bh.distance(h).abs().median())
    metrics: dict[str, Any] = {
        "t0": t0,
        "t0_searched": search is not None,
        "accuracy_x": round(bx.accuracy, 3),
        "accuracy_h": round(bh.accuracy, 3),
        "balanced_accuracy_x": round(bx.balanced_accuracy, 3),
        "balanced_accuracy_h": round(bh.balanced_accuracy, 3),
        "majority_baseline": round(bx.majority_baseline, 3),
        "train_accuracy_x": round(bx.train_accuracy, 3),
        "positives": int(labels.sum()),
        "negatives": int((1 - labels).sum()),
        "distance_scale_x": round(scale_x, 4),
        "distance_scale_h": round(scale_h, 4),
        "fit_seconds": round(time.perf_counter() - start, 2),
    }
    if search is not None:
        metrics["t0_found"] = search.found  # False: nothing mixed within tol; t0 = T
        metrics["radius_at_t0"] = round(search.radius[t0][0], 4)
        metrics["radius_of_noise"] = round(search.reference[0], 4)
    asset = BoundaryAsset(denoiser.name, grid, bx, bh, scale_x, scale_h, p.refine)
    out = AssetOutput(p.name, asset.to_safetensors(), p.model_dump(mode="json"), metrics)
    return [JobOutput(images=[], metrics=metrics, asset=out)]


def edit_distances(p: BoundaryEditParams, asset: BoundaryAsset) -> tuple[float, float | None]:
    """(d for x, d for h or None: the same as x) from the request and the asset's scales."""
    distance = p.distance
    if distance is None:  # strength times the fit's images' median |distance| on x
        if asset.scale_x is None:
            raise refused(
                "params.distance: this boundary asset predates distance_scale_x; give distance"
            )
        distance = p.strength * asset.scale_x
    h_distance = p.h_distance  # None: the same d as x (h_scaling "same", the reference)
    if h_distance is None and p.h_scaling == "ratio":
        if asset.scale_x is None or asset.scale_h is None:
            raise refused(
                "params.h_scaling: this boundary asset predates the ratio; give h_distance"
            )
        h_distance = distance * asset.scale_h / asset.scale_x
    return distance, h_distance


def run_boundary_edit(
    denoiser: Denoiser, batch: Batch[BoundaryEditParams], progress: ProgressFn, ctx: RunContext
) -> list[JobOutput]:
    """Invert to t0, move to distance d (x and h), denoise with eta."""
    require_unconditional(denoiser)
    p = batch.shared
    asset = load_asset(
        ctx, p.asset, BoundaryAsset, "boundary", "params.asset", batch, denoiser.name
    )
    grid = asset.grid
    x0 = denoiser.encode(batch.stack("image"))
    # inverted as the fit's images were (assets from before "refine" were plain DDIM)
    x_t0, _, _ = invert_to(denoiser, x0, grid[-1], len(grid), asset.refine)
    progress(len(grid) - 1, 2 * len(grid) - 1)
    before = asset.x.distance(x_t0)
    distance, h_distance = edit_distances(p, asset)
    out = edit_across(
        denoiser, x_t0, grid, asset.x, distance,
        h_boundary=asset.h if p.move_h else None, h_distance=h_distance, eta=p.eta,
        generator=batch.generators(),
        progress=lambda i, n: progress(len(grid) - 1 + i, 2 * len(grid) - 1),
    )  # fmt: skip
    return [
        JobOutput(
            images=[png(im)],
            metrics={"distance_before": round(float(d), 3), "distance": round(distance, 4)},
        )
        for im, d in zip(to_pil(denoiser.decode(out)), before, strict=True)
    ]


HANDLERS = (
    Handler(BOUNDARY, BoundaryFitParams, run_boundary_fit),
    Handler(
        BOUNDARY_EDIT, BoundaryEditParams, run_boundary_edit,
        batch_fields=("asset", "distance", "strength", "move_h", "h_distance", "h_scaling",
                      "eta"),
    ),
)  # fmt: skip
