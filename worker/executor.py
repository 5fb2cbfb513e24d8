"""Run a batch of compatible jobs on one resident model.

Each job is prepared on its own (parameters validated, images fetched from the
blob store and fitted), so a bad job fails alone; the good ones run as one
batch through the method's handler (``worker.methods``); every job gets its own
outputs or error.
"""

from __future__ import annotations

import io
from typing import Any, cast

import numpy as np
import torch
from PIL import Image
from pydantic import ValidationError

from contract.jobs import JobPayload
from contract.methods import METHODS
from contract.params import MethodParams
from contract.spec import first_error
from store.blobs import BlobStore
from worker.engine import Denoiser, EngineError
from worker.engine.images import FitMode, fit_image, to_tensor
from worker.inversion_cache import InversionCache
from worker.methods import HANDLERS
from worker.methods.handler import (
    AssetOutput,
    Batch,
    JobFailed,
    JobOutput,
    PreparedJob,
    ProgressFn,
    RunContext,
    refused,
)

__all__ = [
    "HANDLERS",
    "AssetOutput",
    "JobFailed",
    "JobOutput",
    "PreparedJob",
    "ProgressFn",
    "RunContext",
    "prepare",
    "run_batch",
]


def prepare(payload: JobPayload, denoiser: Denoiser, blobs: BlobStore) -> PreparedJob[Any]:
    """Validate one job against its method and model; fetch and fit its images."""
    spec = METHODS.get(payload.method)
    if spec is None:
        raise refused(f"method: unknown method {payload.method!r}")
    if denoiser.family not in spec.families:
        raise refused(
            f"model: {payload.method} needs a {' or '.join(spec.families)} model; "
            f"{denoiser.name} is {denoiser.family}",
        )
    try:
        params: MethodParams = spec.params.model_validate(payload.params)
    except ValidationError as exc:
        where, msg = first_error(exc)
        raise refused(f"{where}: {msg}") from exc
    c, h, w = denoiser.image_shape
    fit = cast(FitMode, getattr(params, "fit", "error"))
    missing = spec.missing_input(params, set(payload.inputs))
    if missing is not None:
        raise refused(f"inputs.{missing}: missing")

    def load(where: str, blob_id: str) -> torch.Tensor:
        try:
            data = blobs.get(blob_id)
        except KeyError:
            raise refused(f"{where}: no image {blob_id}") from None
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                return to_tensor([fit_image(im, (h, w), fit)], c)
        except EngineError as exc:
            raise refused(f"{where}: {exc}") from exc

    def load_mask(where: str, blob_id: str) -> torch.Tensor:
        """A mask image (any size; its luminance, white = 1) at h's resolution, (1, 1, H, W)."""
        hh, hw = denoiser.h_shape[1:]
        try:
            with Image.open(io.BytesIO(blobs.get(blob_id))) as im:
                grey = im.convert("L").resize((hw, hh), Image.Resampling.BOX)
        except KeyError:
            raise refused(f"{where}: no image {blob_id}") from None
        except OSError as exc:
            raise refused(f"{where}: not an image: {exc}") from exc
        values = torch.from_numpy(np.asarray(grey, dtype=np.float32) / 255.0)
        return values.view(1, 1, hh, hw)

    images = {}
    for role in (*spec.inputs, *spec.optional_inputs):
        if role in payload.inputs:
            loader = load_mask if role in spec.mask_inputs else load
            images[role] = loader(f"inputs.{role}", payload.inputs[role])
    for name in spec.image_list_params:
        ids = getattr(params, name)
        if ids:
            images[name] = torch.cat([load(f"params.{name}[{i}]", b) for i, b in enumerate(ids)])
    return PreparedJob(payload=payload, params=params, images=images)


def run_batch(
    denoiser: Denoiser,
    jobs: list[PreparedJob[Any]],
    progress: ProgressFn,
    cache: InversionCache | None = None,
    *,
    context: RunContext | None = None,
) -> list[JobOutput]:
    """Run prepared jobs of one method as one batch, in a hook scope of its own (a batch
    run inside another's step, as edits inside a fit, sees none of its hooks); the
    batch's hooks are gone afterwards. A method that does not batch (a fit) runs its
    jobs one after another."""
    method = jobs[0].payload.method
    if any(job.payload.method != method for job in jobs):
        raise ValueError("a batch holds jobs of one method")
    handler = HANDLERS.get(method)
    if handler is None:
        raise refused(f"method: this worker has no handler for {method!r}")
    ctx = context or RunContext()
    if cache is not None:
        ctx.cache = cache
    if handler.batch_fields is None:
        batches = [Batch.of([job], None) for job in jobs]
    else:
        batches = [Batch.of(jobs, handler.batch_fields)]
    outputs: list[JobOutput] = []
    for batch in batches:
        with denoiser.hooks.scope(), torch.no_grad():
            outputs.extend(handler.run(denoiser, batch, progress, ctx))
    return outputs
