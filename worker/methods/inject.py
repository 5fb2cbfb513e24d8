"""Method A: DDIM-invert content (with h) and style, then generate with injection."""

from __future__ import annotations

import torch

from contract.methods.inject import INJECT, InjectParams
from worker.engine import Denoiser
from worker.engine.images import to_pil
from worker.engine.methods.inject import ContentTrajectory, content_trajectory, inject_content
from worker.engine.reconstruct import Inversion
from worker.engine.sampling import ddim_invert
from worker.engine.schedule import timestep_grid
from worker.inversion_cache import InversionKey
from worker.methods.common import ddim_kind, through_cache
from worker.methods.handler import (
    Batch,
    Handler,
    JobOutput,
    PreparedJob,
    ProgressFn,
    RunContext,
    png,
)

# every field of the generation, and the inversions' steps, grid and refinement
BATCH_FIELDS = ("steps", "grid", "g", "t_edit", "t_boost", "w", "lam", "t_damp", "clip_x0",
                "replace_steps", "asymmetric", "refine")  # fmt: skip


def run_inject(
    denoiser: Denoiser, batch: Batch[InjectParams], progress: ProgressFn, ctx: RunContext
) -> list[JobOutput]:
    p = batch.shared
    grid = timestep_grid(p.steps, denoiser.num_train_timesteps, p.grid)
    n = len(grid)
    total, done = (n - 1) + (n - 1) + n, 0

    def tick(_i: int, _n: int) -> None:
        nonlocal done
        done += 1
        progress(done, total)

    content = denoiser.encode(batch.stack("content"))
    style = denoiser.encode(batch.stack("style"))

    def key(job: PreparedJob[InjectParams], role: str, kind: str) -> InversionKey:
        return InversionKey(denoiser.name, job.payload.inputs[role], kind, p.steps, p.grid)

    def content_rows(missing: list[int]) -> list[Inversion]:
        # cached as an Inversion whose per-step tensors are h at each grid step
        traj = content_trajectory(denoiser, content[missing], grid, progress=tick, refine=p.refine)
        assert traj.x_T is not None
        return Inversion("ddim", grid, traj.x_T, [traj.h[t] for t in grid]).rows()

    def style_rows(missing: list[int]) -> list[Inversion]:
        # the same key as a DDIM reconstruct of the image: either reuses the other's
        x_T = ddim_invert(denoiser, style[missing], grid, fixed_point_iters=p.refine,
                          progress=tick).x_T  # fmt: skip
        return Inversion("ddim", grid, x_T).rows()

    jobs = batch.jobs
    c_kind, s_kind = ddim_kind(p.refine, "ddim+h"), ddim_kind(p.refine)
    c_rows, c_hits = through_cache(ctx.cache, [key(j, "content", c_kind) for j in jobs],
                                   content_rows)  # fmt: skip
    s_rows, s_hits = through_cache(ctx.cache, [key(j, "style", s_kind) for j in jobs], style_rows)
    done += (n - 1) * (sum(c_hits) + sum(s_hits)) // len(jobs)  # skipped inversion calls
    c_inv = Inversion.stack(c_rows)
    assert c_inv.zs is not None
    trajectory = ContentTrajectory(grid=grid, h=dict(zip(grid, c_inv.zs, strict=True)))
    x_T = Inversion.stack(s_rows).x_T
    # local injection for the jobs that give a mask (the reference's rule), global for the rest
    masked = torch.tensor(["mask" in job.images for job in jobs])
    mask = None
    if masked.any():
        ones = torch.ones(1, 1, *denoiser.h_shape[1:])
        mask = torch.cat([job.images.get("mask", ones) for job in jobs])
    x0 = inject_content(
        denoiser, x_T, trajectory, p, mask=mask, masked_rows=masked,
        generator=batch.generators(), progress=tick,
    )  # fmt: skip
    return [
        JobOutput(images=[png(im)], metrics={"inversion_cached": bool(c and s)})
        for im, c, s in zip(to_pil(denoiser.decode(x0)), c_hits, s_hits, strict=True)
    ]


HANDLERS = (Handler(INJECT, InjectParams, run_inject, batch_fields=BATCH_FIELDS),)
