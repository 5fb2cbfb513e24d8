"""Methods B, C and D measured on the shipped models, the classifier as judge.

B (boundaries): labelled held-out generator images (100 train, 100 test) for a
binary attribute (a factor's value vs the rest); the step the mixing search picks;
SVM held-out accuracy on x_t0 and h at that step and at 200 / 500 / 800; then
held-out images lacking the value, moved to signed distance d (multiples of the
training set's median |distance|, on x and on h alike) in one step at t0, denoised with
eta = 0 and eta = 1 (the reference's), at the searched t0 and at 500 (the
reference's fixed step): success (the value appears) and preservation (other
factors unchanged).

C (text-embedding mixing, needs ``--text-model``): per task (a neutral prompt
and a target prompt that adds one attribute), lam is learned on 4 seeds and
applied unchanged to those and to 32 other seeds. Against the neutral image
(lam = 1 everywhere) of the same seed: success (the classifier gives the target
value) and preservation (every other factor unchanged), for the learned lam,
the reference initialisation without optimisation, and the target prompt alone
(lam = 0). The optimisation's time, and its peak memory (resident set of a
forked child) with and without per-step checkpointing.

D (style noise): a style set of generator images sharing their style factors
(colour, background) with varied content; 64 samples started from the fitted
distribution (direct and signal-leak forms) against 64 from the model's own prior
("plain": N(0, I), with the offset noise it was trained with). Reported: the
distance between the style set's colour statistics (per-image RGB mean and std,
averaged) and the samples', and the share of samples the classifier gives the
style's colour and background; the signal-leak form also started lower
(``--d-t-start``, 700 and 500), where the leak is large enough for the model to
read. With ``--text-model``, the same with prompts naming the content factors only
(a training format too), and the share whose shape follows the prompt (adherence kept).

    python -m benchmarks.methods_bcd            # B and D
    python -m benchmarks.methods_bcd --only c --text-model models/shapes32-text
    python -m benchmarks.methods_bcd --only d
    python -m benchmarks.methods_bcd --only c-schedule --text-model models/shapes32-text

C-schedule: no fit; hand-set lams (lam 1 on the first K steps then 0, or a ramp) on
32 seeds the mix benchmark does not use (200-231), against the neutral image: at which
step each factor is decided along the run.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import re
import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from benchmarks import model_domain, write_json
from worker.engine import Denoiser, ddim_sample, load_denoiser
from worker.engine.classifier import AttributeClassifier
from worker.engine.images import from_uint8
from worker.engine.methods.boundaries import edit_across, find_mixing_step, fit_boundary, invert_to
from worker.engine.methods.mixing import (
    ClassifierScorer,
    Sampler,
    optimise_lam,
    reference_init,
    sample_mixed,
)
from worker.engine.methods.style_noise import fit_style_noise, initial_noise
from worker.engine.schedule import timestep_grid
from worker.methods.mixing import seed_noises

STYLE_SEED = 3_200_000_000
# B's binary attribute per factor: the value vs the rest
B_TARGETS = {
    "colour": "red",
    "size": "large",
    "shape": "square",
    "position": "top left",
    "aspect": "tall",
}


def _random_content(gen: Any, rng: np.random.Generator, style: dict[str, int]) -> Any:
    """Labels with random content factors and the given style factors (``gen``'s order)."""
    values = {f: style.get(f, int(rng.integers(len(v)))) for f, v in gen.FACTORS.items()}
    return gen.Labels(**values)


def _style_set(gen: Any, colour: str, background: str, count: int) -> torch.Tensor:
    rng = np.random.default_rng(STYLE_SEED)
    style = {
        "colour": gen.FACTORS["colour"].index(colour),
        "background": gen.FACTORS["background"].index(background),
    }
    images = [gen.render(_random_content(gen, rng, style), rng) for _ in range(count)]
    x = from_uint8(np.stack(images))
    return x


def _labelled(gen: Any, count: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    images, labels = gen.generate(seed, count)
    x = from_uint8(images)
    return x, gen.label_array(labels)


def mixing_radius(
    dn: Denoiser, gen: Any, count: int, steps: int, refines: list[int]
) -> list[dict[str, Any]]:
    """B's mixing-step search alone, on ``count`` held-out images, with each number of
    fixed-point iterations: the radius ``||x_t|| / sqrt(D)`` (mean, std) by t, against
    N(0, I)'s, and the step found."""
    x = dn.encode(_labelled(gen, count, STYLE_SEED + 1)[0])
    rows = []
    for refine in refines:
        search = find_mixing_step(
            dn, x, steps=steps, tol=0.02, refine=refine,
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        last = max(search.radius)
        row = {
            "refine": refine,
            "t0": search.t0,
            "found": search.found,
            "reference": [round(v, 4) for v in search.reference],
            "radius_at_last_step": [round(v, 4) for v in search.radius[last]],
            "radius_mean_by_t": {t: round(m, 3) for t, (m, _) in search.radius.items()},
        }
        print("mixing-step search:", json.dumps(row), flush=True)
        rows.append(row)
    return rows


def eval_boundaries(
    dn: Denoiser,
    clf: AttributeClassifier,
    gen: Any,
    targets: dict[str, str],
    count: int,
    steps: int,
    edit_steps: tuple[int, ...] = (500,),
    refine: int = 1,
    fit_steps: tuple[int, ...] = (200, 500, 800),
) -> dict[str, Any]:
    """SVM accuracy at the searched and fixed steps; edit success/preservation over d."""
    cols = list(gen.FACTORS)
    x, y = _labelled(gen, 2 * count, STYLE_SEED + 1)
    start = time.perf_counter()
    search = find_mixing_step(dn, dn.encode(x[:64]), steps=steps, tol=0.02, refine=refine)
    search_s = time.perf_counter() - start
    print(f"mixing step: t0 = {search.t0} (search {search_s:.1f} s); radius by t:",
          {t: round(m, 3) for t, (m, _) in search.radius.items()}, flush=True)  # fmt: skip
    out: dict[str, Any] = {"t0": search.t0, "search_seconds": round(search_s, 1), "targets": {}}
    edit_x, edit_y = _labelled(gen, 256, STYLE_SEED + 2)
    for factor, value in targets.items():
        j, v = cols.index(factor), gen.FACTORS[factor].index(value)
        labels = torch.from_numpy((y[:, j] == v).astype(np.int64))
        rows: dict[str, Any] = {"accuracy_x": {}, "accuracy_h": {}}
        fitted = {}
        for t0 in sorted({search.t0, *fit_steps}):
            t = time.perf_counter()
            x_t0, h, grid = invert_to(dn, dn.encode(x), t0, steps, refine)
            bx = fit_boundary(x_t0, labels, held_out=0.5)
            bh = fit_boundary(h, labels, held_out=0.5)
            rows["accuracy_x"][t0], rows["accuracy_h"][t0] = (
                round(bx.accuracy, 3),
                round(bh.accuracy, 3),
            )
            if t0 == search.t0:
                rows["fit_seconds_incl_inversion"] = round(time.perf_counter() - t, 1)
            scale = float(bx.distance(x_t0).abs().median())
            h_scale = float(bh.distance(h).abs().median())
            fitted[t0] = (bx, bh, grid, scale, h_scale)
        pick = np.flatnonzero(edit_y[:, j] != v)[:32]
        xe, ye = edit_x[pick], edit_y[pick]
        others = [k for k in range(len(cols)) if k != j]
        rows["edits"] = []
        for t0 in sorted({search.t0, *edit_steps}):
            boundary, h_boundary, fit_grid, scale, h_scale = fitted[t0]
            x_t0, _, _ = invert_to(dn, dn.encode(xe), t0, steps, refine)
            for eta in (0.0, 1.0):
                for k in (0.0, 1.0, 2.0, 4.0, 8.0):
                    d = k * scale
                    with torch.no_grad():
                        res = edit_across(
                            dn, x_t0, fit_grid, boundary, d, h_boundary=h_boundary,
                            h_distance=k * h_scale, eta=eta,
                            generator=torch.Generator().manual_seed(0),
                        )  # fmt: skip
                    pred = clf.predict(dn.decode(res).clamp(-1, 1))
                    p = np.stack([pred[name][0].numpy() for name in cols], axis=1)
                    kept = np.all(p[:, others] == ye[:, others], axis=1)
                    rows["edits"].append({
                        "t0": t0, "eta": eta, "d_over_median": k, "d": round(d, 2),
                        "success": round(float((p[:, j] == v).mean()), 3),
                        "preservation": round(float(kept.mean()), 3),
                    })  # fmt: skip
        out["targets"][f"{factor}={value}"] = rows
        print(f"boundary {factor}={value}:", json.dumps(rows), flush=True)
    return out


MIX_TASKS = (  # neutral, target, factor, value
    ("a circle", "a blue circle", "colour", "blue"),
    ("a square", "a square on a white background", "background", "white"),
    ("a triangle", "a large triangle", "size", "large"),
)


def _peak_rss_mb(fn: Callable[[], object]) -> float:
    """Peak resident memory that ``fn`` adds, measured in a forked child (MB)."""

    def child(queue: Any) -> None:
        # the parent's OpenMP pool does not survive the fork: a multi-threaded op in the
        # child would hang on it (one thread measures the same memory)
        torch.set_num_threads(1)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        fn()
        queue.put((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=child, args=(queue,))
    proc.start()
    value = float(queue.get())
    proc.join()
    return value


def _mixed_labels(
    dn: Denoiser,
    clf: AttributeClassifier,
    factors: dict[str, tuple[str, ...]],
    x_T: torch.Tensor,
    grid: list[int],
    prompts: tuple[str, str],
    lam: torch.Tensor,
    uncond: torch.Tensor | None,
    guidance: float,
    sampler: Sampler = "ddim",
    clip_x0: bool = False,
    eta: float = 0.0,
    noises: list[torch.Tensor] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(N, factors) classifier labels of the images sampled with ``lam``, and (N,) whether
    each is in distribution (the shared judge of ``benchmarks.defaults``)."""
    from benchmarks.defaults import judge_tensor

    c_n, c_t = (dn.encode_prompt([prompt] * len(x_T)) for prompt in prompts)
    with torch.no_grad():
        x0 = sample_mixed(dn, x_T, grid, c_n, c_t, lam, uncond=uncond, guidance=guidance,
                          sampler=sampler, clip_x0=clip_x0, eta=eta, noises=noises)  # fmt: skip
    return judge_tensor(clf, list(factors), dn.decode(x0))


def eval_mixing(
    dn: Denoiser,
    clf: AttributeClassifier,
    gen: Any,
    steps: int,
    epochs: int,
    guidance: float,
    learn: int = 4,
    others: int = 32,
    sampler: Sampler = "ddim",
    memory: bool = True,
) -> dict[str, Any]:
    """Learn lam on ``learn`` seeds per task; apply it to those and to ``others`` new seeds
    (through ``sampler``)."""
    grid = timestep_grid(steps, dn.num_train_timesteps)
    n = len(grid)
    scorer = ClassifierScorer(clf)
    uncond = dn.encode_prompt([""]) if guidance != 1.0 else None
    cols = list(gen.FACTORS)
    out: dict[str, Any] = {"steps": steps, "epochs": epochs, "guidance": guidance,
                           "sampler": sampler, "tasks": {}}  # fmt: skip
    x_learn = dn.noise((learn, *dn.sample_shape), torch.Generator().manual_seed(11))
    x_other = dn.noise((others, *dn.sample_shape), torch.Generator().manual_seed(12))
    for neutral, target, factor, value in MIX_TASKS:
        j, v = cols.index(factor), gen.FACTORS[factor].index(value)
        start = time.perf_counter()
        fit = optimise_lam(dn, x_learn, grid, neutral, target, scorer, epochs=epochs,
                           guidance=guidance, sampler=sampler)  # fmt: skip
        fit_s = time.perf_counter() - start
        row: dict[str, Any] = {
            "neutral": neutral,
            "target": target,
            "fit_seconds": round(fit_s, 1),
            "loss_first_last": [round(fit.losses[0], 4), round(fit.losses[-1], 4)],
            "lam": [round(float(a), 2) for a in fit.lam],
        }
        lams = {
            "learned": fit.lam,
            "reference_init": reference_init(n),
            "target_only": torch.zeros(n),
        }
        rest = [k for k in range(len(cols)) if k != j]
        for seeds, x_T in (("learn_seeds", x_learn), ("other_seeds", x_other)):
            prompts = (neutral, target)
            orig, _ = _mixed_labels(
                dn, clf, gen.FACTORS, x_T, grid, prompts, torch.ones(n), uncond, guidance, sampler
            )
            row[seeds] = {"neutral_has_value": round(float((orig[:, j] == v).mean()), 3)}
            for name, lam in lams.items():
                p, _ = _mixed_labels(
                    dn, clf, gen.FACTORS, x_T, grid, prompts, lam, uncond, guidance, sampler
                )
                row[seeds][name] = {
                    "success": round(float((p[:, j] == v).mean()), 3),
                    "preservation": round(float(np.all(p[:, rest] == orig[:, rest], 1).mean()), 3),
                }
        out["tasks"][f"{factor}={value}"] = row
        print("mix:", json.dumps(row), flush=True)
    if not memory:
        return out
    # memory of one optimisation (1 epoch, the learn seeds), with and without checkpointing
    neutral, target = MIX_TASKS[0][:2]
    mem = {}
    for checkpointed in (True, False):
        one_epoch = functools.partial(
            optimise_lam, dn, x_learn, grid, neutral, target, scorer, epochs=1,
            guidance=guidance, checkpointed=checkpointed,
        )  # fmt: skip
        mem["checkpointed" if checkpointed else "plain"] = round(_peak_rss_mb(one_epoch), 1)
    out["peak_rss_mb_one_epoch"] = mem
    print("mix memory (MB added, one epoch):", json.dumps(mem), flush=True)
    return out


def parse_schedule(spec: str, n: int) -> torch.Tensor:
    """A hand-set lam over n steps (top first): ``K`` is 1 on the first K steps, 0 after
    (the reference's init at K = 0.4 n); ``A-B`` is 1 before A, falls linearly to 0 over
    A..B, 0 after; ``A-B@V`` is 1 before A, V on A..B, 0 after."""
    m = re.fullmatch(r"(\d+)(?:-(\d+)(?:@(-?\d+(?:\.\d+)?))?)?", spec)
    ok = m is not None and int(m[1]) <= n and (m[2] is None or int(m[1]) < int(m[2]) <= n)
    if m is None or not ok:
        raise SystemExit(f"--c-schedules {spec!r}: expected K, A-B or A-B@V, 0 <= A < B <= {n}")
    lam = torch.zeros(n)
    lam[: int(m[1])] = 1.0
    if m[2] is not None:
        a, b = int(m[1]), int(m[2])
        lam[a:b] = float(m[3]) if m[3] else torch.linspace(1.0, 0.0, b - a + 1)[:-1]
    return lam


def eval_mix_schedules(
    dn: Denoiser,
    clf: AttributeClassifier,
    gen: Any,
    steps: int,
    guidance: float,
    schedules: list[str],
    seeds: range,
    clip_x0: bool = False,
    eta: float = 0.0,
) -> dict[str, Any]:
    """C without the fit: each hand-set lam on the given seeds, against the neutral image
    (lam = 1 everywhere) of the same seed; when the factors are decided along the run.
    ``clip_x0``: both sampled with every x0 estimate clamped to [-1, 1]; ``eta``: both
    with each seed's fixed step noises (as a mix on that seed draws them)."""
    grid = timestep_grid(steps, dn.num_train_timesteps)
    n = len(grid)
    uncond = dn.encode_prompt([""]) if guidance != 1.0 else None
    cols = list(gen.FACTORS)
    x_T, noises = seed_noises(dn, seeds, n if eta > 0 else 0)
    labels = functools.partial(
        _mixed_labels, dn, clf, gen.FACTORS, x_T, grid, clip_x0=clip_x0, eta=eta,
        noises=noises or None,
    )  # fmt: skip
    top_down = sorted(grid, reverse=True)
    out: dict[str, Any] = {"steps": steps, "guidance": guidance, "seeds": [seeds.start, seeds.stop],
                           "clip_x0": clip_x0, "eta": eta, "tasks": {}}  # fmt: skip
    for neutral, target, factor, value in MIX_TASKS:
        j, v = cols.index(factor), gen.FACTORS[factor].index(value)
        rest = [k for k in range(len(cols)) if k != j]
        prompts = (neutral, target)
        orig, orig_ok = labels(prompts, torch.ones(n), uncond, guidance)
        rows = []
        for spec in schedules:
            lam = parse_schedule(spec, n)
            p, ok = labels(prompts, lam, uncond, guidance)
            switched = (lam < 1).nonzero()
            rows.append({
                "schedule": spec,
                "first_t_not_neutral": top_down[int(switched[0])] if len(switched) else None,
                "success": round(float((p[:, j] == v).mean()), 3),
                "preservation": round(float(np.all(p[:, rest] == orig[:, rest], 1).mean()), 3),
                "kept": {cols[k]: round(float((p[:, k] == orig[:, k]).mean()), 3) for k in rest},
                "in_distribution": round(float(ok.mean()), 3),
                "neutral_in_distribution": round(float(orig_ok.mean()), 3),
            })  # fmt: skip
            print(f"mix schedule {factor}={value}:", json.dumps(rows[-1]), flush=True)
        out["tasks"][f"{factor}={value}"] = rows
    return out


def colour_stats(images: torch.Tensor) -> torch.Tensor:
    """(6,): the set's mean over images of per-image RGB mean and RGB std, in [0, 1] units."""
    x = (images.clamp(-1, 1) + 1) / 2
    return torch.cat([x.mean((2, 3)), x.std((2, 3))], dim=1).mean(0)


def eval_style(
    dn: Denoiser,
    clf: AttributeClassifier,
    gen: Any,
    colour: str,
    background: str,
    style_images: int,
    count: int,
    steps: int,
    eta: float,
    prompts: list[str] | None = None,
    guidance: float = 1.0,
    t_starts: tuple[int, ...] = (),
) -> list[dict[str, Any]]:
    style_x = _style_set(gen, colour, background, style_images)
    target = colour_stats(style_x)
    style = fit_style_noise(dn.encode(style_x))
    grid = timestep_grid(steps, dn.num_train_timesteps)
    ab_T = float(dn.schedule.alphas_cumprod[grid[-1]])
    cond = dn.conditioning(prompts, guidance_scale=guidance) if prompts else None
    rows = []
    starts: list[tuple[str, int | None]] = [
        ("plain", None),
        ("direct", None),
        ("signal_leak", None),
    ]
    starts += [("signal_leak", t) for t in t_starts]
    for form, t_start in starts:
        rng = torch.Generator().manual_seed(5)
        run_grid = grid if t_start is None else timestep_grid(steps, dn.num_train_timesteps,
                                                              t_max=t_start)  # fmt: skip
        start = form if t_start is None else f"{form} from t={t_start}"
        if form == "plain":
            x_T = dn.noise((count, *dn.sample_shape), rng)
        else:
            ab = ab_T if t_start is None else float(dn.schedule.alphas_cumprod[run_grid[-1]])
            x_T = initial_noise(style, count, ab, form, rng, dn.noise_offset)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        with torch.no_grad():
            out = dn.decode(ddim_sample(dn, x_T, run_grid, cond=cond, eta=eta, generator=rng))
        seconds = time.perf_counter() - t0
        pred = clf.predict(out.clamp(-1, 1))
        col = gen.FACTORS["colour"].index(colour)
        bg = gen.FACTORS["background"].index(background)
        row: dict[str, Any] = {
            "start": start,
            "colour_stats_distance": round(float((colour_stats(out) - target).norm()), 4),
            "takes_colour": round(float((pred["colour"][0] == col).float().mean()), 3),
            "takes_background": round(float((pred["background"][0] == bg).float().mean()), 3),
            "s_per_image": round(seconds / count, 3),
        }
        if prompts:
            shapes = gen.SHAPES
            wanted = torch.tensor([next(shapes.index(w) for w in p.split() if w in shapes)
                                   for p in prompts])  # fmt: skip
            row["shape_follows_prompt"] = round(
                float((pred["shape"][0] == wanted).float().mean()), 3
            )
        rows.append(row)
        print(json.dumps({"style": f"{colour} on {background}", "eta": eta, **row}), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="models/shapes32-ddpm")
    p.add_argument("--text-model", default="", help="also measure prompt adherence on this model")
    p.add_argument("--classifier", default="models/shapes32-classifier")
    p.add_argument(
        "--text-classifier",
        default="",
        help="the text model's judge, if its domain differs (default: --classifier)",
    )
    p.add_argument("--only", nargs="+", choices=["b", "b-radius", "c", "c-schedule", "d"],
                   default=["b", "d"])  # fmt: skip
    p.add_argument("--mix-steps", type=int, default=50, help="C: sampling steps (one lam each)")
    p.add_argument("--mix-epochs", type=int, default=10)
    p.add_argument("--mix-others", type=int, default=32, help="C: new seeds to apply lam to")
    p.add_argument("--samplers", nargs="+", choices=["ddim", "plms"], default=["ddim"],
                   help="C: learn and apply lam through each sampler, side by side")  # fmt: skip
    p.add_argument("--guidance", type=float, default=3.0, help="text model's guidance scale")
    p.add_argument(
        "--c-schedules",
        nargs="+",
        default=["15", "20", "25", "30", "35", "20-30"],
        help="c-schedule: hand-set lams (K, A-B, A-B@V; see parse_schedule)",
    )
    p.add_argument("--clip-x0", action="store_true",
                   help="c-schedule: sample with every x0 estimate clamped to [-1, 1]")  # fmt: skip
    p.add_argument("--c-eta", type=float, default=0.0,
                   help="c-schedule: DDIM eta, each seed's step noises fixed")  # fmt: skip
    p.add_argument(
        "--c-first-seed",
        type=int,
        default=200,
        help="c-schedule: the first of --mix-others seeds (not the mix benchmark's)",
    )
    p.add_argument(
        "--b-factors",
        nargs="+",
        choices=sorted(B_TARGETS),
        help="B: the binary attributes (value vs the rest) to fit and edit; default: every "
        "one the model's domain has",
    )
    p.add_argument(
        "--b-fit-steps", nargs="+", type=int, default=[200, 500, 800], help="B: fixed t0s to fit"
    )
    p.add_argument("--labelled", type=int, default=100, help="B: train (and as many test) images")
    p.add_argument("--count", type=int, default=64)
    p.add_argument("--style-images", type=int, default=8)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--d-t-start", type=int, nargs="*", default=[700, 500],
                   help="D: also the signal-leak form started at these timesteps")  # fmt: skip
    p.add_argument(
        "--refine", type=int, default=1, help="fixed-point iterations per DDIM inversion step"
    )
    p.add_argument("--json", dest="json_out")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    dn = load_denoiser(args.model, device="cpu", dtype="float32")
    clf = AttributeClassifier.load(args.classifier)
    gen = model_domain(args.model)
    results: dict[str, Any] = {"d": []}
    if "b" in args.only:
        factors = args.b_factors or [f for f in B_TARGETS if f in gen.FACTORS]
        targets = {f: B_TARGETS[f] for f in factors}
        results["b"] = eval_boundaries(
            dn, clf, gen, targets, args.labelled, 40, refine=args.refine,
            fit_steps=tuple(args.b_fit_steps),
        )  # fmt: skip
    if "b-radius" in args.only:
        results["b_radius"] = mixing_radius(dn, gen, 64, 40, sorted({0, args.refine}))
    for colour, background in (("red", "white"), ("yellow", "black")) if "d" in args.only else ():
        for eta in (0.0, 1.0):
            rows = eval_style(
                dn, clf, gen, colour, background, args.style_images, args.count, args.steps, eta,
                t_starts=tuple(args.d_t_start),
            )  # fmt: skip
            results["d"].append({"style": [colour, background], "eta": eta, "rows": rows})
    if {"c", "c-schedule"} & set(args.only) and not args.text_model:
        p.error("--only c and c-schedule need --text-model")
    tm = load_denoiser(args.text_model, device="cpu", dtype="float32") if args.text_model else None
    text_gen = model_domain(args.text_model) if args.text_model else gen
    text_clf = AttributeClassifier.load(args.text_classifier) if args.text_classifier else clf
    if tm is not None and "c" in args.only:
        results["c"] = [
            eval_mixing(tm, text_clf, text_gen, args.mix_steps, args.mix_epochs, args.guidance,
                        others=args.mix_others, sampler=sampler, memory=i == 0)
            for i, sampler in enumerate(args.samplers)
        ]  # fmt: skip
    if tm is not None and "c-schedule" in args.only:
        seeds = range(args.c_first_seed, args.c_first_seed + args.mix_others)
        results["c_schedule"] = eval_mix_schedules(
            tm,
            text_clf,
            text_gen,
            args.mix_steps,
            args.guidance,
            args.c_schedules,
            seeds,
            clip_x0=args.clip_x0,
            eta=args.c_eta,
        )
    if tm is not None and "d" in args.only:
        rng = np.random.default_rng(9)
        for colour, background in (("red", "white"), ("yellow", "black")):
            # captions naming the content factors only (a training format
            # too): the colours are left to the start, so the style has to come from it
            style = {
                "colour": text_gen.FACTORS["colour"].index(colour),
                "background": text_gen.FACTORS["background"].index(background),
            }
            prompts = [
                _random_content(text_gen, rng, style).caption(frozenset(text_gen.CONTENT_FACTORS))
                for _ in range(args.count)
            ]
            rows = eval_style(
                tm, text_clf, text_gen, colour, background, args.style_images, args.count,
                args.steps, 1.0, prompts, guidance=args.guidance, t_starts=tuple(args.d_t_start),
            )  # fmt: skip
            results.setdefault("d_text", []).append({"style": [colour, background], "rows": rows})
    write_json(args.json_out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
