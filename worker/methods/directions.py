"""Method E: fit h-space directions (PCA, supervised, Jacobian) and move images along them."""

from __future__ import annotations

import itertools
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
    Strata,
    collect_h,
    edit_with_direction,
    jacobian_fit,
    pca_fit,
    supervised_directions,
)
from worker.engine.methods.inject import content_trajectory
from worker.engine.sampling import ddim_invert, ddpm_invert
from worker.engine.schedule import timestep_grid
from worker.methods.common import (
    classifier_labels,
    classifier_scores,
    judging_classifier,
    load_asset,
    require_unconditional,
)
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
    names = [f for f in ctx.classifier.factors if f not in (factor, "valid")]
    return classifier_labels(ctx.classifier, names, images)


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


def condition_factors(p: DirectionFitParams, ctx: RunContext, images: torch.Tensor) -> list[str]:
    """``condition_on`` without the fit's own factor, each checked against the classifier
    (the own factor, when named, is read by ``conditioned_by_classifier``)."""
    factors = list(dict.fromkeys(f for f in p.condition_on if f != p.factor))
    if p.condition_on:
        clf = judging_classifier(ctx, images, "params.condition_on")
        unknown = [f for f in factors if f not in clf.factors]
        if unknown:
            raise refused(
                f"params.condition_on: {unknown[0]!r} is not a factor of the classifier; "
                f"one of {', '.join(clf.factors)}"
            )
    return factors


def supervised_by_classifier(
    p: DirectionFitParams, h: dict[int, torch.Tensor], images: torch.Tensor, ctx: RunContext
) -> tuple[dict[int, torch.Tensor], dict[str, Any], Strata | None]:
    score = classifier_scores(p.factor, p.value, images, ctx)
    factors = condition_factors(p, ctx, images)
    if factors or p.factor in p.condition_on:
        return conditioned_by_classifier(p, h, images, ctx, score, factors)
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
    return {t: d.unsqueeze(0) for t, d in dirs.items()}, counts, None


def conditioned_by_classifier(
    p: DirectionFitParams,
    h: dict[int, torch.Tensor],
    images: torch.Tensor,
    ctx: RunContext,
    score: torch.Tensor,
    factors: list[str],
) -> tuple[dict[int, torch.Tensor], dict[str, Any], Strata]:
    """One mean difference per stratum: per combination of ``factors``' values (as the
    classifier reads the samples), its top-K positives (score >= 0.5) against its
    bottom-K negatives, K = min(top_k, either side's count), or with ``balance`` its
    pairs matched on the factors left. Every combination needs a pair: an edit may
    meet any of them.

    With the fit's own factor in ``condition_on``, each combination is split once more
    by the image's own value u of the factor: for u other than the target, the
    negatives are the samples read as u only (a square's difference from triangles,
    another from circles, where the plain rule takes one from both); for the target
    value itself, the plain rule's difference (all the others)."""
    assert ctx.classifier is not None  # judging_classifier refused already
    clf = ctx.classifier
    own = p.factor in p.condition_on
    assert p.factor is not None and p.value is not None  # the params' own check
    rest = [f for f in clf.factors if f not in (*factors, p.factor, "valid")]
    read_factors = [*factors, p.factor] if own else factors
    labels = classifier_labels(clf, [*read_factors, *rest], images)  # one pass for all
    n_read = len(read_factors)
    read, rest_labels = labels[:, :n_read], labels[:, n_read:] if rest else None
    names = [clf.factors[f] for f in read_factors]
    target = clf.factors[p.factor].index(p.value)
    values: list[tuple[str, ...]] = []
    per_stratum: list[torch.Tensor] = []  # (steps, *h) each
    pairs: list[int] = []
    chosen: list[torch.Tensor] = []  # each stratum's positives, then its negatives
    for combo in itertools.product(*(range(len(v)) for v in names)):
        others = combo[: len(factors)]
        members = torch.nonzero((read[:, : len(factors)] == torch.tensor(others)).all(dim=1))
        members = members.flatten()
        if own and combo[-1] != target:  # the target's samples against u's only
            mine = read[members, -1]
            members = members[(mine == target) | (mine == combo[-1])]
        sub = score[members]
        n_pos, n_neg = int((sub >= 0.5).sum()), int((sub < 0.5).sum())
        label = ", ".join(f"{f}={v[c]}" for f, v, c in zip(read_factors, names, combo, strict=True))
        if p.balance and rest_labels is not None:
            pos, neg = balanced_pairs(sub, rest_labels[members], p.top_k)
        else:
            k = min(p.top_k, n_pos, n_neg)
            order = torch.argsort(sub, descending=True)
            pos, neg = order[:k], order[len(order) - k :]
        if len(pos) == 0:
            raise refused(
                f"params.samples: of {p.samples} samples, {len(members)} read as {label}"
                f"{f' or {p.factor}={p.value}' if own and combo[-1] != target else ''}, "
                f"{n_pos} of them as {p.factor}={p.value} and {n_neg} not"
                f"{' (none with a match on the other factors)' if p.balance else ''}; every "
                "combination needs both: raise params.samples or condition on fewer factors"
            )
        pos, neg = members[pos], members[neg]
        chosen += [pos, neg]
        dirs = supervised_directions(
            {t: v[pos] for t, v in h.items()}, {t: v[neg] for t, v in h.items()}
        )
        per_stratum.append(torch.stack([dirs[t] for t in sorted(dirs)]))
        values.append(tuple(v[c] for v, c in zip(names, combo, strict=True)))
        pairs.append(len(pos))
    steps = sorted(h)
    stacked = torch.stack(per_stratum, dim=1)  # (steps, strata, *h)
    counts = {
        "strata": len(values),
        "condition_on": read_factors,
        "pairs_per_stratum": pairs,
        "positives": sum(pairs),
        "negatives": sum(pairs),
        "score_positives": round(float(score[torch.cat(chosen[0::2])].mean()), 3),
        "score_negatives": round(float(score[torch.cat(chosen[1::2])].mean()), 3),
    }
    strata = Strata(tuple(read_factors), tuple(values))
    return {t: stacked[i] for i, t in enumerate(steps)}, counts, strata


def fit_directions(
    denoiser: Denoiser,
    job: PreparedJob[DirectionFitParams],
    grid: list[int],
    progress: ProgressFn,
    ctx: RunContext,
) -> tuple[dict[int, torch.Tensor], dict[str, Any], Strata | None]:
    """({t: (k, *h)}, metrics, strata) of the job's kind, before any projection."""
    p, seed = job.params, job.payload.seed
    sampling = phase(progress, "sampling")
    if p.kind == "pca":
        h, _ = generated_h(denoiser, p.samples, grid, seed, sampling)
        dirs, stds = pca_fit(h, p.k)
        return dirs, {"std_top_step": [round(float(v), 4) for v in stds[grid[-1]]]}, None
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
        return dirs, {"positives": len(p.positives), "negatives": len(p.negatives)}, None
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
    return dirs, {"sigma_top_step": [round(float(v), 4) for v in sigmas[grid[-1]]]}, None


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
    dirs, metrics, strata = fit_directions(denoiser, job, grid, progress, ctx)
    dirs = without_others(dirs, batch, grid, ctx, denoiser.name)
    metrics["fit_seconds"] = round(time.perf_counter() - start, 2)
    asset = DirectionsAsset(p.kind, denoiser.name, grid, dirs, p.refine, strata)
    out = AssetOutput(p.name, asset.to_safetensors(), p.model_dump(mode="json"), metrics)
    return [JobOutput(images=[], metrics=metrics, asset=out)]


def run_direction_edit(
    denoiser: Denoiser, batch: Batch[DirectionEditParams], progress: ProgressFn, ctx: RunContext
) -> list[JobOutput]:
    """Invert on the asset's grid, sample with h + s * dh at t >= t_edit."""
    require_unconditional(denoiser)
    p = batch.shared
    asset = load_directions(ctx, p.asset, "params.asset", batch, denoiser.name)
    if asset.strata is not None and p.component != 0:
        raise refused(
            "params.component: the asset holds one direction per combination of "
            f"{', '.join(asset.strata.factors)}, picked per image; leave component at 0"
        )
    if p.component >= asset.components:
        raise refused(f"params.component: the asset has {asset.components} directions")
    images = batch.stack("image")
    rows = strata_rows(asset.strata, images, ctx)
    grid = asset.grid
    n, done = len(grid), 0

    def tick(_i: int, _n: int) -> None:
        nonlocal done
        done += 1
        progress(done, 2 * n - 1)

    x0 = denoiser.encode(images)
    noises, eta = None, 0.0
    if p.inversion == "ddpm":  # edit-friendly: the reference's inversion of real images
        maps = ddpm_invert(denoiser, x0, grid, generator=batch.generators(), progress=tick)
        x_T, noises, eta = maps.x_T, maps.zs, maps.eta
    else:
        x_T = ddim_invert(denoiser, x0, grid, fixed_point_iters=p.refine, progress=tick).x_T
    if rows is None:
        chosen = {t: d[p.component] for t, d in asset.directions.items()}
    else:  # (B, *h): each image its own stratum's
        chosen = {t: d[rows] for t, d in asset.directions.items()}
    out = edit_with_direction(
        denoiser, x_T, grid, chosen, p.scale, t_edit=p.t_edit, asymmetric=p.asymmetric,
        eta=eta, noises=noises, progress=tick,
    )  # fmt: skip
    pictures = to_pil(denoiser.decode(out))
    if rows is None or asset.strata is None:
        return [JobOutput(images=[png(im)]) for im in pictures]
    strata = asset.strata
    return [
        JobOutput(images=[png(im)],
                  metrics={"stratum": dict(zip(strata.factors, strata.values[r], strict=True))})
        for im, r in zip(pictures, rows.tolist(), strict=True)
    ]  # fmt: skip


def strata_rows(strata: Strata | None, images: torch.Tensor, ctx: RunContext
                ) -> torch.Tensor | None:  # fmt: skip
    """(B,) each image's stratum, as the worker's classifier reads it (None: no strata)."""
    if strata is None:
        return None
    clf = judging_classifier(
        ctx, images, "params.asset",
        "the asset's directions are picked by the classifier's reading of each image",
    )  # fmt: skip
    missing = [f for f in strata.factors if f not in clf.factors]
    if missing:
        raise refused(f"params.asset: conditioned on {missing[0]!r}, which this worker's "
                      "classifier does not read")  # fmt: skip
    read = classifier_labels(clf, list(strata.factors), images)
    names = [clf.factors[f] for f in strata.factors]
    index = {v: k for k, v in enumerate(strata.values)}
    rows = []
    for row in read.tolist():
        key = tuple(n[c] for n, c in zip(names, row, strict=True))
        if key not in index:
            raise refused(f"params.asset: no direction for {key} (the fit's classifier read "
                          "other values)")  # fmt: skip
        rows.append(index[key])
    return torch.tensor(rows, dtype=torch.long)


HANDLERS = (
    Handler(DIRECTIONS, DirectionFitParams, run_direction_fit),
    Handler(
        DIRECTION, DirectionEditParams, run_direction_edit,
        batch_fields=("asset", "component", "scale", "t_edit", "asymmetric", "inversion",
                      "refine"),
    ),
)  # fmt: skip
