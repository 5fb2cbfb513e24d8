"""Helpers more than one method's handler uses: inversions through the cache, assets,
generated samples, the classifier's labels."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import torch

from worker.engine import Conditioning, Denoiser, EngineError
from worker.engine.reconstruct import Inversion, invert
from worker.engine.sampling import ddim_sample
from worker.engine.schedule import timestep_grid
from worker.inversion_cache import InversionCache, InversionKey
from worker.methods.handler import (
    Batch,
    PreparedJob,
    ProgressFn,
    RunContext,
    chunk_tick,
    phase,
    refused,
)

if TYPE_CHECKING:
    from worker.engine.classifier import AttributeClassifier

A = TypeVar("A", covariant=True)


def conditioning(denoiser: Denoiser, jobs: list[PreparedJob[Any]]) -> Conditioning | None:
    """The jobs' prompts as the model's conditioning (None for an unconditional model)."""
    if not denoiser.conditional:
        return None
    return denoiser.conditioning([getattr(job.params, "prompt", "") for job in jobs])


def ddim_kind(refine: int, base: str = "ddim") -> str:
    """The inversion cache's kind of a DDIM inversion with ``refine`` fixed-point iterations."""
    return base if refine == 0 else f"{base}+fp{refine}"


def through_cache(
    cache: InversionCache | None,
    keys: list[InversionKey],
    compute: Callable[[list[int]], list[Inversion]],
) -> tuple[list[Inversion], list[bool]]:
    """Rows from the cache where present; ``compute(missing indices)`` for the rest, cached."""
    parts: list[Inversion | None] = [cache.get(k) if cache is not None else None for k in keys]
    missing = [i for i, part in enumerate(parts) if part is None]
    if missing:
        for i, row in zip(missing, compute(missing), strict=True):
            parts[i] = row
            if cache is not None:
                cache.put(keys[i], row)
    rows = [part for part in parts if part is not None]
    return rows, [i not in missing for i in range(len(keys))]


def invert_cached(
    denoiser: Denoiser,
    batch: Batch[Any],
    images: torch.Tensor,
    cache: InversionCache | None,
    progress: Callable[[int, int], None],
) -> tuple[Inversion, list[bool]]:
    """The batch's inversion of ``inputs.image``: cached rows reused, the rest inverted
    together and cached. Reads steps, inversion, grid and refine from ``batch.shared``."""
    p = batch.shared

    def key(job: PreparedJob[Any]) -> InversionKey:
        return InversionKey(
            model=denoiser.name,
            image=job.payload.inputs["image"],
            kind=p.inversion if p.inversion == "ddpm" else ddim_kind(p.refine),
            steps=p.steps,
            grid=p.grid,
            prompt=getattr(job.params, "prompt", ""),
            seed=job.payload.seed if p.inversion == "ddpm" else None,
        )

    def compute(missing: list[int]) -> list[Inversion]:
        sub = [batch.jobs[i] for i in missing]
        return invert(
            denoiser,
            images[missing],
            steps=p.steps,
            inversion=p.inversion,
            grid=p.grid,
            cond=conditioning(denoiser, sub),
            generator=[torch.Generator().manual_seed(job.payload.seed) for job in sub],
            refine=p.refine,
            progress=progress,
        ).rows()

    rows, hits = through_cache(cache, [key(job) for job in batch.jobs], compute)
    return Inversion.stack(rows), hits


class AssetCodec(Protocol[A]):
    """A fit method's typed asset (``to_safetensors`` / ``from_safetensors``)."""

    @classmethod
    def from_safetensors(cls, data: bytes) -> A: ...


def load_asset(
    ctx: RunContext,
    asset_id: str,
    codec: type[AssetCodec[A]],
    method: str,
    where: str,
    batch: Batch[Any],
    model: str,
) -> A:
    """The asset ``asset_id`` of ``method``, fitted on ``model``, that every job of the
    batch may use, decoded by ``codec``; refused, naming ``where``, when it is not one."""
    record = ctx.assets.get(asset_id) if ctx.assets is not None else None
    # jobs batch by asset id: each of them must own it (or it has no owner)
    foreign = record is not None and any(
        record.get("owner") not in (None, job.payload.owner) for job in batch.jobs
    )
    if record is None or foreign or record.get("method") != method or ctx.blobs is None:
        raise refused(f"{where}: no {method} asset {asset_id!r}")
    if record["model"] != model:
        raise refused(f"{where}: fitted on model {record['model']}, not {model}")
    try:
        return codec.from_safetensors(ctx.blobs.get(record["blob"]))
    except EngineError as exc:
        raise refused(f"{where}: {exc}") from exc


def require_unconditional(denoiser: Denoiser) -> None:
    if denoiser.conditional:
        raise refused(
            f"model: h-space directions run on unconditional models; {denoiser.name} is "
            "text-conditioned"
        )


def require_text_model(denoiser: Denoiser) -> None:
    if not denoiser.conditional:
        raise refused(
            f"model: prompt mixing needs a text-conditioned model; {denoiser.name} is not"
        )


def generate(
    denoiser: Denoiser, count: int, steps: int, seed: int, progress: ProgressFn
) -> torch.Tensor:
    """``count`` samples (images in [-1, 1]), eta = 1, in chunks of 64."""
    gen = torch.Generator().manual_seed(seed)
    grid = timestep_grid(steps, denoiser.num_train_timesteps)
    outs = []
    n, chunks = len(grid), -(-count // 64)
    for chunk, start in enumerate(range(0, count, 64)):
        x_T = denoiser.noise(
            (min(64, count - start), *denoiser.sample_shape), gen, torch.device("cpu")
        )
        x0 = ddim_sample(
            denoiser, x_T, grid, eta=1.0, generator=gen,
            progress=chunk_tick(phase(progress, "sampling"), chunk * n, chunks * n),
        )  # fmt: skip
        outs.append(denoiser.decode(x0))
    return torch.cat(outs).cpu()


def judging_classifier(
    ctx: RunContext, images: torch.Tensor, where: str = "factor",
    without: str = "give positives and negatives instead",
) -> AttributeClassifier:  # fmt: skip
    """The worker's classifier, refused (naming ``where``) when there is none or it
    cannot judge ``images``."""
    clf = ctx.classifier
    if clf is None:
        raise refused(
            f"{where}: this worker has no classifier to label images (EDITSERVE_CLASSIFIER); "
            f"{without}"
        )
    if tuple(images.shape[1:]) != (3, clf.image_size, clf.image_size):
        raise refused(
            f"{where}: the classifier judges {clf.image_size}px RGB images; this model makes "
            f"{tuple(images.shape[1:])}"
        )
    return clf


def classifier_scores(
    factor: str | None, value: str | None, images: torch.Tensor, ctx: RunContext
) -> torch.Tensor:
    """P(factor = value) of each image by the worker's classifier, (N,) on the CPU."""
    clf = ctx.classifier
    if clf is not None and factor not in clf.factors:
        raise refused(f"params.factor: one of {', '.join(clf.factors)}")
    if clf is not None and value not in clf.factors[str(factor)]:
        raise refused(f"params.value: one of {', '.join(clf.factors[str(factor)])}")
    clf = judging_classifier(ctx, images)
    values = clf.factors[str(factor)]
    param = next(clf.parameters())
    logits = clf(images.clamp(-1, 1).to(device=param.device, dtype=param.dtype))[str(factor)]
    scores: torch.Tensor = logits.float().softmax(-1)[:, values.index(str(value))].cpu()
    return scores


def classifier_labels(clf: AttributeClassifier, factors: list[str], images: torch.Tensor
                      ) -> torch.Tensor:  # fmt: skip
    """(N, len(factors)) the classifier's value index of each factor, on the CPU."""
    param = next(clf.parameters())
    with torch.no_grad():
        logits = clf(images.clamp(-1, 1).to(device=param.device, dtype=param.dtype))
    return torch.stack([logits[f].float().argmax(-1).cpu() for f in factors], dim=1)
