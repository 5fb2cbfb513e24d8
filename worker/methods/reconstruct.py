"""Reconstruct: invert each image and sample it back; reports the round trip's PSNR."""

from __future__ import annotations

from contract.methods.reconstruct import RECONSTRUCT, ReconstructParams
from worker.engine import Denoiser
from worker.engine.images import psnr, to_pil
from worker.engine.reconstruct import regenerate
from worker.methods.common import conditioning, invert_cached
from worker.methods.handler import Batch, Handler, JobOutput, ProgressFn, RunContext, png


def run_reconstruct(
    denoiser: Denoiser, batch: Batch[ReconstructParams], progress: ProgressFn, ctx: RunContext
) -> list[JobOutput]:
    p = batch.shared
    images = batch.stack("image")
    inversion_calls = p.steps - 1 if p.inversion == "ddim" else p.steps
    total, done = inversion_calls + p.steps, 0

    def tick(_i: int, _n: int) -> None:
        nonlocal done
        done += 1
        progress(done, total)

    inv, cached = invert_cached(denoiser, batch, images, ctx.cache, tick)
    done = inversion_calls  # a cached inversion skips those steps
    decoded = regenerate(denoiser, inv, cond=conditioning(denoiser, batch.jobs), progress=tick)
    scores = psnr(decoded, images)
    return [
        JobOutput(images=[png(im)], metrics={"psnr_db": round(db, 3), "inversion_cached": hit})
        for im, db, hit in zip(to_pil(decoded), scores, cached, strict=True)
    ]


HANDLERS = (
    Handler(
        RECONSTRUCT, ReconstructParams, run_reconstruct,
        batch_fields=("steps", "inversion", "grid", "refine"),
    ),
)  # fmt: skip
