"""Run a batch of compatible jobs on one resident model.

Each job is prepared on its own (parameters validated, images fetched from the
blob store and fitted), so a bad job fails alone; the good ones run as one
batch through the method's handler; every job gets its own outputs or error.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import numpy as np
import torch
from PIL import Image
from pydantic import ValidationError

from service.blobs import BlobStore
from service.contract import ErrorCode, JobPayload
from service.method_specs import METHODS, MethodParams, first_error
from worker.engine import Conditioning, Denoiser, EngineError
from worker.engine.hspace import project_out, project_out_joint
from worker.engine.images import FitMode, fit_image, psnr, to_pil, to_tensor
from worker.engine.methods.boundaries import (
    Boundary,
    edit_across,
    find_mixing_step,
    fit_boundary,
    invert_to,
)
from worker.engine.methods.directions import (
    collect_h,
    edit_with_direction,
    jacobian_fit,
    pca_fit,
    supervised_directions,
)
from worker.engine.methods.inject import (
    ContentTrajectory,
    InjectionSettings,
    content_trajectory,
    inject_content,
)
from worker.engine.methods.mixing import (
    ClassifierScorer,
    Corrections,
    Sampler,
    Scorer,
    VggPerceptual,
    WithContent,
    optimise_lam,
    real_image_corrections,
    reference_init,
    sample_mixed,
)
from worker.engine.methods.style_noise import StyleNoise, fit_style_noise, initial_noise
from worker.engine.reconstruct import Inversion, invert, regenerate
from worker.engine.sampling import ddim_invert, ddim_sample, ddpm_invert
from worker.engine.schedule import timestep_grid
from worker.inversion_cache import InversionCache, InversionKey


class ProgressFn(Protocol):
    """``progress(step, total)``, or with the phase a multi-phase fit is in (the job view
    shows it, with the phase's time left). Each call is a step boundary, where a fit
    may yield to queued edits (``worker.yielding``)."""

    def __call__(self, step: int, total: int, phase: str | None = None) -> None: ...


def _phase(progress: ProgressFn, name: str) -> Callable[[int, int], None]:
    """An engine function's ``progress(i, n)``, reported as phase ``name``."""
    return lambda i, n: progress(i, n, name)


def _chunk_tick(
    progress: Callable[[int, int], None], before: int, total: int
) -> Callable[[int, int], None]:
    """Step i of a chunk, reported as step ``before + i`` of ``total``."""
    return lambda i, _n: progress(before + i, total)


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
class AssetOutput:
    """A fit's product: tensors (stored as safetensors in the blob store) and their record."""

    name: str
    tensors: dict[str, torch.Tensor]
    meta: dict[str, str]  # safetensors metadata: what an edit needs to apply it
    params: dict[str, Any]
    metrics: dict[str, Any]

    def to_bytes(self) -> bytes:
        from safetensors.torch import save

        packed = {k: v.detach().float().cpu().contiguous() for k, v in self.tensors.items()}
        data: bytes = save(packed, metadata=self.meta)
        return data


@dataclass
class JobOutput:
    images: list[bytes]  # PNG bytes
    metrics: dict[str, Any] = field(default_factory=dict)
    asset: AssetOutput | None = None


@dataclass
class RunContext:
    """What handlers may use beyond the model: caches, stores, the judge."""

    cache: InversionCache | None = None
    blobs: BlobStore | None = None
    assets: Any = None  # service.assets.AssetIndex (Redis); None where there is none
    classifier: Any = None  # worker.engine.classifier.AttributeClassifier
    clip: Any = None  # worker.engine.methods.mixing.ClipScorer, where configured
    vgg: VggPerceptual | None = None  # method C's perceptual content term, where configured


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
        where, msg = first_error(exc)
        raise JobFailed(ErrorCode.INVALID_INPUT, f"{where}: {msg}") from exc
    c, h, w = denoiser.image_shape
    fit = cast(FitMode, getattr(params, "fit", "error"))
    missing = spec.missing_input(params, set(payload.inputs))
    if missing is not None:
        raise JobFailed(ErrorCode.INVALID_INPUT, f"inputs.{missing}: missing")

    def load(where: str, blob_id: str) -> torch.Tensor:
        try:
            data = blobs.get(blob_id)
        except KeyError:
            raise JobFailed(ErrorCode.INVALID_INPUT, f"{where}: no image {blob_id}") from None
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                return to_tensor([fit_image(im, (h, w), fit)], c)
        except EngineError as exc:
            raise JobFailed(ErrorCode.INVALID_INPUT, f"{where}: {exc}") from exc

    def load_mask(where: str, blob_id: str) -> torch.Tensor:
        """A mask image (any size; its luminance, white = 1) at h's resolution, (1, 1, H, W)."""
        hh, hw = denoiser.h_shape[1:]
        try:
            with Image.open(io.BytesIO(blobs.get(blob_id))) as im:
                grey = im.convert("L").resize((hw, hh), Image.Resampling.BOX)
        except KeyError:
            raise JobFailed(ErrorCode.INVALID_INPUT, f"{where}: no image {blob_id}") from None
        except OSError as exc:
            raise JobFailed(ErrorCode.INVALID_INPUT, f"{where}: not an image: {exc}") from exc
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


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _ddim_kind(refine: int, base: str = "ddim") -> str:
    """The inversion cache's kind of a DDIM inversion with ``refine`` fixed-point iterations."""
    return base if refine == 0 else f"{base}+fp{refine}"


def _inversion_key(denoiser: Denoiser, job: PreparedJob, role: str = "image") -> InversionKey:
    p = job.params
    return InversionKey(
        model=denoiser.name,
        image=job.payload.inputs[role],
        kind=p.inversion if p.inversion == "ddpm" else _ddim_kind(p.refine),
        steps=p.steps,
        grid=p.grid,
        prompt=getattr(p, "prompt", ""),
        seed=job.payload.seed if p.inversion == "ddpm" else None,
    )


def _conditioning(denoiser: Denoiser, jobs: list[PreparedJob]) -> Conditioning | None:
    if not denoiser.conditional:
        return None
    return denoiser.conditioning([getattr(job.params, "prompt", "") for job in jobs])


def _through_cache(
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
    jobs: list[PreparedJob],
    images: torch.Tensor,
    cache: InversionCache | None,
    progress: Callable[[int, int], None],
) -> tuple[Inversion, list[bool]]:
    """The batch's inversion: cached rows reused, the rest inverted together and cached."""
    first = jobs[0].params

    def compute(missing: list[int]) -> list[Inversion]:
        sub = [jobs[i] for i in missing]
        return invert(
            denoiser,
            images[missing],
            steps=first.steps,
            inversion=first.inversion,
            grid=first.grid,
            cond=_conditioning(denoiser, sub),
            generator=[torch.Generator().manual_seed(job.payload.seed) for job in sub],
            refine=first.refine,
            progress=progress,
        ).rows()

    keys = [_inversion_key(denoiser, job) for job in jobs]
    rows, hits = _through_cache(cache, keys, compute)
    return Inversion.stack(rows), hits


def _run_reconstruct(
    denoiser: Denoiser, jobs: list[PreparedJob], progress: ProgressFn, ctx: RunContext
) -> list[JobOutput]:
    steps = jobs[0].params.steps
    images = torch.cat([job.images["image"] for job in jobs])
    inversion_calls = steps - 1 if jobs[0].params.inversion == "ddim" else steps
    total, done = inversion_calls + steps, 0

    def tick(_i: int, _n: int) -> None:
        nonlocal done
        done += 1
        progress(done, total)

    inv, cached = invert_cached(denoiser, jobs, images, ctx.cache, tick)
    done = inversion_calls  # a cached inversion skips those steps
    decoded = regenerate(denoiser, inv, cond=_conditioning(denoiser, jobs), progress=tick)
    scores = psnr(decoded, images)
    return [
        JobOutput(images=[_png(im)], metrics={"psnr_db": round(db, 3), "inversion_cached": hit})
        for im, db, hit in zip(to_pil(decoded), scores, cached, strict=True)
    ]


def _run_inject(
    denoiser: Denoiser, jobs: list[PreparedJob], progress: ProgressFn, ctx: RunContext
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

    def key(job: PreparedJob, role: str, kind: str) -> InversionKey:
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

    c_kind, s_kind = _ddim_kind(p.refine, "ddim+h"), _ddim_kind(p.refine)
    c_rows, c_hits = _through_cache(ctx.cache, [key(j, "content", c_kind) for j in jobs],
                                    content_rows)  # fmt: skip
    s_rows, s_hits = _through_cache(ctx.cache, [key(j, "style", s_kind) for j in jobs], style_rows)
    done += (n - 1) * (sum(c_hits) + sum(s_hits)) // len(jobs)  # skipped inversion calls
    c_inv = Inversion.stack(c_rows)
    assert c_inv.zs is not None
    trajectory = ContentTrajectory(grid=grid, h=dict(zip(grid, c_inv.zs, strict=True)))
    x_T = Inversion.stack(s_rows).x_T
    settings = InjectionSettings.from_params(p)
    generators = [torch.Generator().manual_seed(job.payload.seed) for job in jobs]
    # local injection for the jobs that give a mask (the reference's rule), global for the rest
    masked = torch.tensor(["mask" in job.images for job in jobs])
    mask = None
    if masked.any():
        ones = torch.ones(1, 1, *denoiser.h_shape[1:])
        mask = torch.cat([job.images.get("mask", ones) for job in jobs])
    x0 = inject_content(
        denoiser, x_T, trajectory, settings, mask=mask, masked_rows=masked,
        generator=generators, progress=tick,
    )  # fmt: skip
    return [
        JobOutput(images=[_png(im)], metrics={"inversion_cached": bool(c and s)})
        for im, c, s in zip(to_pil(denoiser.decode(x0)), c_hits, s_hits, strict=True)
    ]


# ---------------------------------------------------------------- method E
def _direction_unconditional(denoiser: Denoiser) -> None:
    if denoiser.conditional:
        raise JobFailed(
            ErrorCode.INVALID_INPUT,
            f"model: h-space directions run on unconditional models; {denoiser.name} is "
            "text-conditioned",
        )


def _load_asset(
    ctx: RunContext,
    asset_id: str,
    method: str,
    where: str,
    jobs: list[PreparedJob],
    model: str,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, str]]:
    """(record, tensors, metadata) of an asset of ``method`` that every job may use."""
    from safetensors.torch import load as load_tensors

    record = ctx.assets.get(asset_id) if ctx.assets is not None else None
    # jobs batch by asset id: each of them must own it (or it has no owner)
    foreign = record is not None and any(
        record.get("owner") not in (None, job.payload.owner) for job in jobs
    )
    if record is None or foreign or record.get("method") != method or ctx.blobs is None:
        raise JobFailed(ErrorCode.INVALID_INPUT, f"{where}: no {method} asset {asset_id!r}")
    if record["model"] != model:
        raise JobFailed(
            ErrorCode.INVALID_INPUT, f"{where}: fitted on model {record['model']}, not {model}"
        )
    data = ctx.blobs.get(record["blob"])
    # the safetensors header: 8 bytes little-endian length, then JSON with __metadata__
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    meta: dict[str, str] = header.get("__metadata__", {})
    return record, load_tensors(data), meta


def _load_directions(
    ctx: RunContext, asset_id: str, where: str, jobs: list[PreparedJob], model: str
) -> tuple[dict[int, torch.Tensor], dict[str, str]]:
    """({t: (k, *h)}, metadata) of a directions asset."""
    _, tensors, meta = _load_asset(ctx, asset_id, "directions", where, jobs, model)
    dirs = {int(name[1:]): value for name, value in tensors.items() if name.startswith("t")}
    return dirs, meta


def _generated_h(
    denoiser: Denoiser,
    count: int,
    grid: list[int],
    seed: int,
    progress: Callable[[int, int], None],
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
            progress=_chunk_tick(progress, chunk * n, chunks * n),
        )  # fmt: skip
        for t, v in h.items():
            hs.setdefault(t, []).append(v.float().cpu())
        outs.append(denoiser.decode(x0).cpu())
    return {t: torch.cat(v) for t, v in hs.items()}, torch.cat(outs)


def _classifier_scores(p: Any, images: torch.Tensor, ctx: RunContext) -> torch.Tensor:
    """P(factor = value) of each image by the worker's classifier, (N,) on the CPU."""
    clf = ctx.classifier
    if clf is None:
        raise JobFailed(
            ErrorCode.INVALID_INPUT,
            "factor: this worker has no classifier to label samples (EDITSERVE_CLASSIFIER); "
            "give positives and negatives instead",
        )
    if p.factor not in clf.factors:
        known = ", ".join(clf.factors)
        raise JobFailed(ErrorCode.INVALID_INPUT, f"params.factor: one of {known}")
    values = clf.factors[p.factor]
    if p.value not in values:
        raise JobFailed(ErrorCode.INVALID_INPUT, f"params.value: one of {', '.join(values)}")
    if tuple(images.shape[1:]) != (3, clf.image_size, clf.image_size):
        raise JobFailed(
            ErrorCode.INVALID_INPUT,
            f"factor: the classifier judges {clf.image_size}px RGB images; this model makes "
            f"{tuple(images.shape[1:])}",
        )
    param = next(clf.parameters())
    logits = clf(images.clamp(-1, 1).to(device=param.device, dtype=param.dtype))[p.factor]
    scores: torch.Tensor = logits.float().softmax(-1)[:, values.index(p.value)].cpu()
    return scores


def _supervised_by_classifier(
    p: Any, h: dict[int, torch.Tensor], images: torch.Tensor, ctx: RunContext
) -> tuple[dict[int, torch.Tensor], dict[str, Any]]:
    score = _classifier_scores(p, images, ctx)
    order = torch.argsort(score, descending=True)
    k = min(p.top_k, len(order) // 2)
    pos, neg = order[:k], order[-k:]  # top-K vs bottom-K, as Haas et al.
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


def run_direction_fit(
    denoiser: Denoiser, jobs: list[PreparedJob], progress: ProgressFn, ctx: RunContext
) -> list[JobOutput]:
    """Method E fit: one job (fits do not batch) -> a directions asset."""
    _direction_unconditional(denoiser)
    outputs = []
    for job in jobs:
        p = job.params
        grid = timestep_grid(p.steps, denoiser.num_train_timesteps, p.grid)
        start = time.perf_counter()
        metrics: dict[str, Any] = {}
        sampling = _phase(progress, "sampling")
        if p.kind == "pca":
            h, _ = _generated_h(denoiser, p.samples, grid, job.payload.seed, sampling)
            dirs, stds = pca_fit(h, p.k)
            metrics["std_top_step"] = [round(float(v), 4) for v in stds[grid[-1]]]
        elif p.kind == "supervised" and p.positives:
            pos = content_trajectory(
                denoiser, denoiser.encode(job.images["positives"]), grid, refine=p.refine,
                progress=_phase(progress, "inverting positives"),
            )  # fmt: skip
            neg = content_trajectory(
                denoiser, denoiser.encode(job.images["negatives"]), grid, refine=p.refine,
                progress=_phase(progress, "inverting negatives"),
            )  # fmt: skip
            dirs = {t: d.unsqueeze(0) for t, d in supervised_directions(pos.h, neg.h).items()}
            metrics.update(positives=len(p.positives), negatives=len(p.negatives))
        elif p.kind == "supervised":
            h, images = _generated_h(denoiser, p.samples, grid, job.payload.seed, sampling)
            dirs, counts = _supervised_by_classifier(p, h, images, ctx)
            metrics.update(counts)
        else:  # jacobian, of one image at every step of its inversion
            if p.jacobian_t is not None and p.jacobian_t not in grid:
                raise JobFailed(
                    ErrorCode.INVALID_INPUT,
                    f"params.jacobian_t: {p.jacobian_t} is not a step of this {p.steps}-step "
                    f"{p.grid} grid; its steps: {grid}",
                )
            x0 = denoiser.encode(job.images["image"])
            traj = ddim_invert(
                denoiser, x0, grid, fixed_point_iters=p.refine,
                progress=_phase(progress, "inversion"),
            )  # fmt: skip
            dirs, sigmas = jacobian_fit(
                denoiser, traj.xs, grid, k=p.k, iters=p.iters, apply=p.jacobian_apply,
                at_t=p.jacobian_t, generator=torch.Generator().manual_seed(job.payload.seed),
                progress=_phase(progress, "jacobian"),
            )  # fmt: skip
            metrics["sigma_top_step"] = [round(float(v), 4) for v in sigmas[grid[-1]]]
        # every other asset's directions removed at once: projecting against one asset
        # after another leaves the result orthogonal to the last only
        removed: dict[int, list[torch.Tensor]] = {t: [] for t in grid}
        for other_id in p.project_out:
            others, _ = _load_directions(ctx, other_id, "params.project_out", [job], denoiser.name)
            lacking = [t for t in grid if t not in others]
            if lacking:
                raise JobFailed(
                    ErrorCode.INVALID_INPUT,
                    f"params.project_out: asset {other_id} has no directions for steps "
                    f"{lacking[:5]}; fit it with the same steps and grid",
                )
            for t in grid:
                removed[t].append(others[t].float())
        if p.project_out and p.project_out_solve == "joint":  # the reference's
            dirs = project_out_joint(dirs, {t: torch.cat(removed[t]) for t in grid})
        elif p.project_out:
            dirs = {
                t: torch.stack([project_out(d, torch.cat(removed[t])) for d in dirs[t]])
                for t in grid
            }
        metrics["fit_seconds"] = round(time.perf_counter() - start, 2)
        meta = {
            "kind": p.kind,
            "grid": json.dumps(grid),
            "model": denoiser.name,
            "components": str(next(iter(dirs.values())).shape[0]),
            "refine": str(p.refine),
        }
        asset = AssetOutput(
            name=p.name,
            tensors={f"t{t}": dirs[t] for t in grid},
            meta=meta,
            params=p.model_dump(mode="json"),
            metrics=metrics,
        )
        outputs.append(JobOutput(images=[], metrics=metrics, asset=asset))
    return outputs


def run_direction_edit(
    denoiser: Denoiser, jobs: list[PreparedJob], progress: ProgressFn, ctx: RunContext
) -> list[JobOutput]:
    """Method E edit: invert on the asset's grid, sample with h + s * dh at t >= t_edit."""
    _direction_unconditional(denoiser)
    p = jobs[0].params
    dirs, meta = _load_directions(ctx, p.asset, "params.asset", jobs, denoiser.name)
    components = int(meta.get("components", "1"))
    if p.component >= components:
        raise JobFailed(
            ErrorCode.INVALID_INPUT, f"params.component: the asset has {components} directions"
        )
    grid = [int(t) for t in json.loads(meta["grid"])]
    n, done = len(grid), 0

    def tick(_i: int, _n: int) -> None:
        nonlocal done
        done += 1
        progress(done, 2 * n - 1)

    x0 = denoiser.encode(torch.cat([job.images["image"] for job in jobs]))
    noises, eta = None, 0.0
    if p.inversion == "ddpm":  # edit-friendly: the reference's inversion of real images
        generators = [torch.Generator().manual_seed(job.payload.seed) for job in jobs]
        maps = ddpm_invert(denoiser, x0, grid, generator=generators, progress=tick)
        x_T, noises, eta = maps.x_T, maps.zs, maps.eta
    else:
        x_T = ddim_invert(denoiser, x0, grid, fixed_point_iters=p.refine, progress=tick).x_T
    chosen = {t: d[p.component] for t, d in dirs.items()}
    out = edit_with_direction(
        denoiser, x_T, grid, chosen, p.scale, t_edit=p.t_edit, asymmetric=p.asymmetric,
        eta=eta, noises=noises, progress=tick,
    )  # fmt: skip
    return [JobOutput(images=[_png(im)]) for im in to_pil(denoiser.decode(out))]


# ---------------------------------------------------------------- method B
def _generate(
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
            progress=_chunk_tick(_phase(progress, "sampling"), chunk * n, chunks * n),
        )  # fmt: skip
        outs.append(denoiser.decode(x0))
    return torch.cat(outs).cpu()


def run_boundary_fit(
    denoiser: Denoiser, jobs: list[PreparedJob], progress: ProgressFn, ctx: RunContext
) -> list[JobOutput]:
    """Method B fit: one job -> a boundary asset (x_t0 and h boundaries, t0, accuracies)."""
    _direction_unconditional(denoiser)
    outputs = []
    for job in jobs:
        p = job.params
        start = time.perf_counter()
        if p.positives:
            pos, neg = job.images["positives"], job.images["negatives"]
            images = torch.cat([pos, neg])
            labels = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).long()
        else:
            images = _generate(denoiser, p.samples, 25, job.payload.seed, progress)
            labels = (_classifier_scores(p, images, ctx) > 0.5).long()
        x0 = denoiser.encode(images)
        search = None
        t0 = p.t0
        if t0 is None:
            search = find_mixing_step(
                denoiser, x0, steps=p.steps, tol=p.tol, refine=p.refine,
                generator=torch.Generator().manual_seed(job.payload.seed),
                progress=_phase(progress, "mixing-step search"),
            )  # fmt: skip
            t0 = search.t0
        x_t0, h, grid = invert_to(
            denoiser, x0, t0, p.steps, p.refine, progress=_phase(progress, "inversion to t0")
        )
        try:
            bx = fit_boundary(x_t0, labels, held_out=p.held_out, c=p.c, seed=job.payload.seed)
            bh = fit_boundary(h, labels, held_out=p.held_out, c=p.c, seed=job.payload.seed)
        except EngineError as exc:
            raise JobFailed(ErrorCode.INVALID_INPUT, f"params.{exc}") from exc
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
            # the fit's images' median |signed distance|: the unit an edit's distance
            # is best chosen in (on x; h moves by the same d unless h_scaling says ratio)
            "distance_scale_x": round(float(bx.distance(x_t0).abs().median()), 4),
            "distance_scale_h": round(float(bh.distance(h).abs().median()), 4),
            "fit_seconds": round(time.perf_counter() - start, 2),
        }
        if search is not None:
            metrics["t0_found"] = search.found  # False: nothing mixed within tol; t0 = T
            metrics["radius_at_t0"] = round(search.radius[t0][0], 4)
            metrics["radius_of_noise"] = round(search.reference[0], 4)
        meta = {
            "kind": "boundary",
            "model": denoiser.name,
            "grid": json.dumps(grid),
            "offset_x": repr(bx.offset),
            "offset_h": repr(bh.offset),
            # median |signed distance| of the fit's images: h's d follows x's by their ratio
            "scale_x": repr(float(bx.distance(x_t0).abs().median())),
            "scale_h": repr(float(bh.distance(h).abs().median())),
            "refine": str(p.refine),
        }
        tensors = {"normal_x": bx.normal, "normal_h": bh.normal}
        asset = AssetOutput(p.name, tensors, meta, p.model_dump(mode="json"), metrics)
        outputs.append(JobOutput(images=[], metrics=metrics, asset=asset))
    return outputs


def run_boundary_edit(
    denoiser: Denoiser, jobs: list[PreparedJob], progress: ProgressFn, ctx: RunContext
) -> list[JobOutput]:
    """Method B edit: invert to t0, move to distance d (x and h), denoise with eta."""
    _direction_unconditional(denoiser)
    p = jobs[0].params
    _, tensors, meta = _load_asset(ctx, p.asset, "boundary", "params.asset", jobs, denoiser.name)
    grid = [int(t) for t in json.loads(meta["grid"])]
    bx = Boundary(tensors["normal_x"], float(meta["offset_x"]), float("nan"), float("nan"))
    bh = Boundary(tensors["normal_h"], float(meta["offset_h"]), float("nan"), float("nan"))
    x0 = denoiser.encode(torch.cat([job.images["image"] for job in jobs]))
    # inverted as the fit's images were (assets from before "refine" were plain DDIM)
    x_t0, _, _ = invert_to(denoiser, x0, grid[-1], len(grid), int(meta.get("refine", "0")))
    progress(len(grid) - 1, 2 * len(grid) - 1)
    before = bx.distance(x_t0)
    distance = p.distance
    if distance is None:  # strength times the fit's images' median |distance| on x
        if "scale_x" not in meta:
            raise JobFailed(
                ErrorCode.INVALID_INPUT,
                "params.distance: this boundary asset predates distance_scale_x; give distance",
            )
        distance = p.strength * float(meta["scale_x"])
    h_distance = p.h_distance  # None: the same d as x (h_scaling "same", the reference)
    if h_distance is None and p.h_scaling == "ratio":
        if "scale_x" not in meta:
            raise JobFailed(
                ErrorCode.INVALID_INPUT,
                "params.h_scaling: this boundary asset predates the ratio; give h_distance",
            )
        h_distance = distance * float(meta["scale_h"]) / float(meta["scale_x"])
    generators = [torch.Generator().manual_seed(job.payload.seed) for job in jobs]
    out = edit_across(
        denoiser, x_t0, grid, bx, distance,
        h_boundary=bh if p.move_h else None, h_distance=h_distance, eta=p.eta,
        generator=generators,
        progress=lambda i, n: progress(len(grid) - 1 + i, 2 * len(grid) - 1),
    )  # fmt: skip
    return [
        JobOutput(
            images=[_png(im)],
            metrics={"distance_before": round(float(d), 3), "distance": round(distance, 4)},
        )
        for im, d in zip(to_pil(denoiser.decode(out)), before, strict=True)
    ]


# ---------------------------------------------------------------- method C
def _text_model(denoiser: Denoiser) -> None:
    if not denoiser.conditional:
        raise JobFailed(
            ErrorCode.INVALID_INPUT,
            f"model: prompt mixing needs a text-conditioned model; {denoiser.name} is not",
        )


def _scorer(ctx: RunContext, name: str, content: str = "scorer") -> Scorer:
    scorer = _image_text_scorer(ctx, name)
    if content == "vgg":
        if ctx.vgg is None:
            raise JobFailed(
                ErrorCode.INVALID_INPUT,
                "params.content: this worker has no VGG16 weights (EDITSERVE_VGG); use 'scorer'",
            )
        return WithContent(scorer, ctx.vgg)
    return scorer


def _image_text_scorer(ctx: RunContext, name: str) -> Scorer:
    if name == "clip":
        if ctx.clip is None:
            raise JobFailed(
                ErrorCode.INVALID_INPUT,
                "params.scorer: this worker has no CLIP folder (EDITSERVE_CLIP); use 'classifier'",
            )
        scorer: Scorer = ctx.clip
        return scorer
    if ctx.classifier is None:
        raise JobFailed(
            ErrorCode.INVALID_INPUT,
            "params.scorer: this worker has no classifier for the loss (EDITSERVE_CLASSIFIER)",
        )
    return ClassifierScorer(ctx.classifier)


def _mix_start(
    denoiser: Denoiser,
    job: PreparedJob,
    grid: list[int],
    c_n: torch.Tensor,
    uncond: torch.Tensor | None,
    guidance: float,
    correct_share: float = 2 / 3,
    refine: int = 0,
    sampler: Sampler = "ddim",
) -> tuple[torch.Tensor, Corrections | None]:
    """x_T of the job's seed, or of its real image (inverted, with per-step corrections)."""
    gen = torch.Generator().manual_seed(job.payload.seed)
    if "image" not in job.images:
        return denoiser.noise((1, *denoiser.sample_shape), gen, torch.device("cpu")), None
    corrections = real_image_corrections(
        denoiser, denoiser.encode(job.images["image"]), grid, c_n, uncond=uncond,
        guidance=guidance, correct_share=correct_share, refine=refine, sampler=sampler,
        generator=gen,
    )  # fmt: skip
    return corrections.x_T, corrections


def run_lam_fit(
    denoiser: Denoiser, jobs: list[PreparedJob], progress: ProgressFn, ctx: RunContext
) -> list[JobOutput]:
    """Method C fit: one job -> a lam asset, learned on its seed (or its image)."""
    _text_model(denoiser)
    outputs = []
    for job in jobs:
        p = job.params
        start = time.perf_counter()
        grid = timestep_grid(p.steps, denoiser.num_train_timesteps)
        c_n = denoiser.encode_prompt([p.neutral])
        uncond = denoiser.encode_prompt([""]) if p.guidance_scale != 1.0 else None
        x_T, corrections = _mix_start(
            denoiser, job, grid, c_n, uncond, p.guidance_scale, refine=p.refine,
            sampler=p.sampler,
        )  # fmt: skip
        fit = optimise_lam(
            denoiser, x_T, grid, p.neutral, p.target, _scorer(ctx, p.scorer, p.content),
            lam0=reference_init(len(grid), p.noisy_share), epochs=p.epochs, lr=p.lr,
            content_weight=p.content_weight, guidance=p.guidance_scale,
            corrections=corrections, sampler=p.sampler,
            progress=_phase(progress, "optimising lam"),
        )  # fmt: skip
        metrics = {
            "loss_first": round(fit.losses[0], 4),
            "loss_last": round(fit.losses[-1], 4),
            "fit_seconds": round(time.perf_counter() - start, 2),
        }
        meta = {
            "kind": "lam",
            "model": denoiser.name,
            "grid": json.dumps(grid),
            "neutral": p.neutral,
            "target": p.target,
            "guidance_scale": repr(p.guidance_scale),
            "sampler": p.sampler,
        }
        asset = AssetOutput(p.name, {"lam": fit.lam}, meta, p.model_dump(mode="json"), metrics)
        assert fit.edited is not None
        images = [_png(im) for im in to_pil(fit.edited)]
        outputs.append(JobOutput(images=images, metrics=metrics, asset=asset))
    return outputs


def run_mix(
    denoiser: Denoiser, jobs: list[PreparedJob], progress: ProgressFn, ctx: RunContext
) -> list[JobOutput]:
    """Method C edit: the learned lam on each job's seed (or its real image)."""
    _text_model(denoiser)
    p = jobs[0].params
    _, tensors, meta = _load_asset(ctx, p.asset, "lam", "params.asset", jobs, denoiser.name)
    grid = [int(t) for t in json.loads(meta["grid"])]
    guidance = float(meta.get("guidance_scale", "1.0"))
    sampler: Sampler = "plms" if meta.get("sampler") == "plms" else "ddim"  # lam is per sampler
    c_n = denoiser.encode_prompt([meta["neutral"]])
    c_t = denoiser.encode_prompt([meta["target"]])
    uncond = denoiser.encode_prompt([""]) if guidance != 1.0 else None
    outputs = []
    for k, job in enumerate(jobs):  # corrections are per image: one run per job
        x_T, corrections = _mix_start(
            denoiser, job, grid, c_n, uncond, guidance, p.correct_share, p.refine, sampler
        )
        x0 = sample_mixed(denoiser, x_T, grid, c_n, c_t, tensors["lam"], uncond=uncond,
                          guidance=guidance, corrections=corrections,
                          sampler=sampler)  # fmt: skip
        outputs.append(JobOutput(images=[_png(im) for im in to_pil(denoiser.decode(x0))]))
        progress(k + 1, len(jobs))
    return outputs


# ---------------------------------------------------------------- method D
def run_style_fit(
    denoiser: Denoiser, jobs: list[PreparedJob], progress: ProgressFn, ctx: RunContext
) -> list[JobOutput]:
    """Method D fit: one job -> a style-noise asset (mu, sigma^2, optional low-DCT cov)."""
    outputs = []
    for job in jobs:
        p = job.params
        start = time.perf_counter()
        z = denoiser.encode(job.images["images"])
        try:
            style = fit_style_noise(z, p.dct_k)
        except EngineError as exc:
            raise JobFailed(ErrorCode.INVALID_INPUT, f"params.{exc}") from exc
        progress(1, 1)
        metrics = {
            "images": int(z.shape[0]),
            "mean_sigma": round(float(style.var.sqrt().mean()), 4),
            "fit_seconds": round(time.perf_counter() - start, 3),
        }
        meta = {"kind": "style-noise", "model": denoiser.name, "count": str(z.shape[0])}
        asset = AssetOutput(p.name, style.tensors(), meta, p.model_dump(mode="json"), metrics)
        outputs.append(JobOutput(images=[], metrics=metrics, asset=asset))
    return outputs


def run_style_generate(
    denoiser: Denoiser, jobs: list[PreparedJob], progress: ProgressFn, ctx: RunContext
) -> list[JobOutput]:
    """Method D: one sample per job, starting from the style's distribution."""
    p = jobs[0].params
    _, tensors, _ = _load_asset(ctx, p.asset, "style-noise", "params.asset", jobs, denoiser.name)
    style = StyleNoise.from_tensors(tensors)
    if tuple(style.mean.shape) != denoiser.sample_shape:
        raise JobFailed(
            ErrorCode.INVALID_INPUT,
            f"params.asset: fitted for x_T of shape {tuple(style.mean.shape)}, "
            f"model {denoiser.name} samples {denoiser.sample_shape}",
        )
    if p.t_start is not None and p.t_start >= denoiser.num_train_timesteps:
        raise JobFailed(
            ErrorCode.INVALID_INPUT,
            f"params.t_start: model {denoiser.name} has timesteps 0 to "
            f"{denoiser.num_train_timesteps - 1}, got {p.t_start}",
        )
    t_start = p.t_start if p.form == "signal_leak" else None  # the direct form starts at T
    grid = timestep_grid(p.steps, denoiser.num_train_timesteps, p.grid, t_max=t_start)
    generators = [torch.Generator().manual_seed(job.payload.seed) for job in jobs]
    ab_T = float(denoiser.schedule.alphas_cumprod[grid[-1]])
    x_T = initial_noise(style, len(jobs), ab_T, p.form, generators, offset=denoiser.noise_offset)
    cond = None
    if denoiser.conditional:
        prompts = [job.params.prompt for job in jobs]
        cond = denoiser.conditioning(prompts, guidance_scale=p.guidance_scale)
    x0 = ddim_sample(
        denoiser, x_T, grid, cond=cond, eta=p.eta, generator=generators, progress=progress
    )
    return [JobOutput(images=[_png(im)]) for im in to_pil(denoiser.decode(x0))]


Handler = Callable[[Denoiser, list[PreparedJob], ProgressFn, RunContext], list[JobOutput]]
HANDLERS: dict[str, Handler] = {
    "reconstruct": _run_reconstruct,
    "inject": _run_inject,
    "directions": run_direction_fit,
    "direction": run_direction_edit,
    "boundary": run_boundary_fit,
    "boundary-edit": run_boundary_edit,
    "lam": run_lam_fit,
    "mix": run_mix,
    "style-noise": run_style_fit,
    "style-generate": run_style_generate,
}


def run_batch(
    denoiser: Denoiser,
    jobs: list[PreparedJob],
    progress: ProgressFn,
    cache: InversionCache | None = None,
    *,
    context: RunContext | None = None,
) -> list[JobOutput]:
    """Run prepared jobs of one method as one batch, in a hook scope of its own (a batch
    run inside another's step, as edits inside a fit, sees none of its hooks); the
    batch's hooks are gone afterwards."""
    method = jobs[0].payload.method
    if any(job.payload.method != method for job in jobs):
        raise ValueError("a batch holds jobs of one method")
    ctx = context or RunContext()
    if cache is not None:
        ctx.cache = cache
    with denoiser.hooks.scope(), torch.no_grad():
        return HANDLERS[method](denoiser, jobs, progress, ctx)
