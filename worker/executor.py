"""Run a batch of compatible jobs on one resident model.

Each job is prepared on its own (parameters validated, images fetched from the
blob store and fitted), so a bad job fails alone; the good ones run as one
batch through the method's handler; every job gets its own outputs or error.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from PIL import Image
from pydantic import ValidationError

from service.blobs import BlobStore
from service.contract import ErrorCode, JobPayload
from service.method_specs import METHODS, MethodParams
from worker.engine import Conditioning, Denoiser, EngineError
from worker.engine.images import FitMode, fit_image, psnr, to_pil, to_tensor
from worker.engine.methods.inject import InjectionSettings, content_trajectory, inject_content
from worker.engine.reconstruct import Inversion, invert, regenerate
from worker.engine.sampling import ddim_invert
from worker.engine.schedule import timestep_grid
from worker.inversion_cache import InversionCache, InversionKey

ProgressFn = Callable[[int, int], None]


class JobFailed(Exception):
    """A job that cannot succeed; carries the public error code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class PreparedJob:
    payload: JobPayload
    params: Any  # the method's validated MethodParams subclass
    images: dict[str, torch.Tensor]  # role -> (1, C, H, W) in [-1, 1]


@dataclass
class JobOutput:
    images: list[bytes]  # PNG bytes
    metrics: dict[str, Any] = field(default_factory=dict)


def prepare(payload: JobPayload, denoiser: Denoiser, blobs: BlobStore) -> PreparedJob:
    """Validate one job against its method and model; fetch and fit its images."""
    spec = METHODS.get(payload.method)
    if spec is None:
        raise JobFailed(ErrorCode.INVALID_INPUT, f"method: unknown method {payload.method!r}")
    if denoiser.family not in spec.families:
        raise JobFailed(
            ErrorCode.INVALID_INPUT,
            f"model: {payload.method} needs a {' or '.join(spec.families)} model; "
            f"{denoiser.name} is {denoiser.family}",
        )
    try:
        params: MethodParams = spec.params.model_validate(payload.params)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise JobFailed(ErrorCode.INVALID_INPUT, f"params.{where}: {first['msg']}") from exc
    c, h, w = denoiser.image_shape
    images = {}
    for role in spec.inputs:
        blob_id = payload.inputs.get(role)
        if blob_id is None:
            raise JobFailed(ErrorCode.INVALID_INPUT, f"inputs.{role}: missing")
        try:
            data = blobs.get(blob_id)
        except KeyError:
            raise JobFailed(ErrorCode.INVALID_INPUT, f"inputs.{role}: no image {blob_id}") from None
        fit = cast(FitMode, getattr(params, "fit", "error"))
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                images[role] = to_tensor([fit_image(im, (h, w), fit)], c)
        except EngineError as exc:
            raise JobFailed(ErrorCode.INVALID_INPUT, f"inputs.{role}: {exc}") from exc
    return PreparedJob(payload=payload, params=params, images=images)


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _inversion_key(denoiser: Denoiser, job: PreparedJob, role: str = "image") -> InversionKey:
    p = job.params
    return InversionKey(
        model=denoiser.name,
        image=job.payload.inputs[role],
        kind=p.inversion,
        steps=p.steps,
        grid=p.grid,
        prompt=getattr(p, "prompt", ""),
        seed=job.payload.seed if p.inversion == "ddpm" else None,
    )


def _conditioning(denoiser: Denoiser, jobs: list[PreparedJob]) -> Conditioning | None:
    if not denoiser.conditional:
        return None
    return denoiser.conditioning([getattr(job.params, "prompt", "") for job in jobs])


def invert_cached(
    denoiser: Denoiser,
    jobs: list[PreparedJob],
    images: torch.Tensor,
    cache: InversionCache | None,
    progress: ProgressFn,
) -> tuple[Inversion, list[bool]]:
    """The batch's inversion: cached rows reused, the rest inverted together and cached."""
    keys = [_inversion_key(denoiser, job) for job in jobs]
    parts: list[Inversion | None] = [cache.get(k) if cache is not None else None for k in keys]
    missing = [i for i, part in enumerate(parts) if part is None]
    if missing:
        first = jobs[0].params
        sub = [jobs[i] for i in missing]
        fresh = invert(
            denoiser,
            images[missing],
            steps=first.steps,
            inversion=first.inversion,
            grid=first.grid,
            cond=_conditioning(denoiser, sub),
            generator=[torch.Generator().manual_seed(job.payload.seed) for job in sub],
            progress=progress,
        )
        for i, row in zip(missing, fresh.rows(), strict=True):
            parts[i] = row
            if cache is not None:
                cache.put(keys[i], row)
    done = [p for p in parts if p is not None]
    return Inversion.stack(done), [i not in missing for i in range(len(jobs))]


def _run_reconstruct(
    denoiser: Denoiser, jobs: list[PreparedJob], progress: ProgressFn, cache: InversionCache | None
) -> list[JobOutput]:
    steps = jobs[0].params.steps
    images = torch.cat([job.images["image"] for job in jobs])
    inversion_calls = steps - 1 if jobs[0].params.inversion == "ddim" else steps
    total, done = inversion_calls + steps, 0

    def tick(_i: int, _n: int) -> None:
        nonlocal done
        done += 1
        progress(done, total)

    inv, cached = invert_cached(denoiser, jobs, images, cache, tick)
    done = inversion_calls  # a cached inversion skips those steps
    decoded = regenerate(denoiser, inv, cond=_conditioning(denoiser, jobs), progress=tick)
    scores = psnr(decoded, images)
    return [
        JobOutput(images=[_png(im)], metrics={"psnr_db": round(db, 3), "inversion_cached": hit})
        for im, db, hit in zip(to_pil(decoded), scores, cached, strict=True)
    ]


def _run_inject(
    denoiser: Denoiser, jobs: list[PreparedJob], progress: ProgressFn, cache: InversionCache | None
) -> list[JobOutput]:
    """Method A: DDIM-invert content (with h) and style, then generate with injection."""
    p = jobs[0].params
    grid = timestep_grid(p.steps, denoiser.num_train_timesteps, p.grid)
    n = len(grid)
    total, done = (n - 1) + (n - 1) + n, 0

    def tick(_i: int, _n: int) -> None:
        nonlocal done
        done += 1
        progress(done, total)

    content = denoiser.encode(torch.cat([job.images["content"] for job in jobs]))
    style = denoiser.encode(torch.cat([job.images["style"] for job in jobs]))
    trajectory = content_trajectory(denoiser, content, grid, progress=tick)
    x_T = ddim_invert(denoiser, style, grid, progress=tick).x_T
    settings = InjectionSettings(
        g=p.g, t_edit=p.t_edit, t_boost=p.t_boost, w=p.w, lam=p.lam, t_damp=p.t_damp
    )
    generators = [torch.Generator().manual_seed(job.payload.seed) for job in jobs]
    x0 = inject_content(denoiser, x_T, trajectory, settings, generator=generators, progress=tick)
    return [JobOutput(images=[_png(im)]) for im in to_pil(denoiser.decode(x0))]


Handler = Callable[
    [Denoiser, list[PreparedJob], ProgressFn, InversionCache | None], list[JobOutput]
]
HANDLERS: dict[str, Handler] = {"reconstruct": _run_reconstruct, "inject": _run_inject}


def run_batch(
    denoiser: Denoiser,
    jobs: list[PreparedJob],
    progress: ProgressFn,
    cache: InversionCache | None = None,
) -> list[JobOutput]:
    """Run prepared jobs of one method as one batch; the model is clean afterwards."""
    method = jobs[0].payload.method
    if any(job.payload.method != method for job in jobs):
        raise ValueError("a batch holds jobs of one method")
    try:
        with torch.no_grad():
            return HANDLERS[method](denoiser, jobs, progress, cache)
    finally:
        denoiser.hooks.clear()
