"""Quality figures of the shipped unconditional model and classifier (the model cards' numbers).

1. ``samples``: N generated samples, classified: the share read valid and confident
   (> 0.9) on every factor, the share grainy, and each factor value's share against its
   fair share.
2. ``inversion``: 50-step DDIM inversion of held-out generator images, mean PSNR of
   the reconstruction; edit-friendly DDPM inversion, max abs error in fp32.
3. ``h_weight``: how much eps changes when h is zeroed or swapped between samples.
4. ``swap``: regenerate an image while its h is replaced, at every step, by the h of
   a twin differing in one content factor; the share of outputs whose factor follows h.
5. ``classifier``: per-factor accuracy on fresh generator images.

    python -m benchmarks.model_quality                        # all sections
    python -m benchmarks.model_quality --only swap --pairs 32
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from benchmarks import write_json
from worker.engine import Denoiser, ddim_invert, ddim_sample, ddpm_invert, load_denoiser
from worker.engine.classifier import GRAIN_LIMIT, AttributeClassifier, grain
from worker.engine.images import from_uint8, psnr
from worker.engine.schedule import timestep_grid
from worker.training.aligned import CONTENT_FACTORS, FACTORS, Labels, label_array, render

HELD_OUT_SEED = 3_000_000_000


def _in_chunks(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, size: int = 64
) -> torch.Tensor:
    return torch.cat([fn(x[i : i + size]) for i in range(0, len(x), size)])


def eval_samples(
    dn: Denoiser, clf: AttributeClassifier, count: int, steps: int, eta: float
) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(1234)
    x_T = dn.noise((count, *dn.sample_shape), gen)
    grid = timestep_grid(steps, dn.num_train_timesteps)
    start = time.perf_counter()
    with torch.no_grad():
        out = _in_chunks(lambda x: ddim_sample(dn, x, grid, eta=eta, generator=gen), x_T)
    seconds = time.perf_counter() - start
    pred = clf.predict(out.clamp(-1, 1))
    # every factor read with confidence > 0.9 and, where the classifier has a valid
    # head, read valid with it (an invalid reading, however confident, is not a sample)
    confident = torch.stack([pred[name][1] > 0.9 for name in FACTORS]).all(0)
    if "valid" in pred:
        confident &= (pred["valid"][0] == 1) & (pred["valid"][1] > 0.9)
    shares = {}
    for name, values in FACTORS.items():
        counts = np.bincount(pred[name][0].numpy(), minlength=len(values))
        fair = count / len(values)
        shares[name] = {v: round(c / fair, 2) for v, c in zip(values, counts, strict=True)}
    min_share = min(min(s.values()) for s in shares.values())
    return {
        "count": count,
        "steps": steps,
        "eta": eta,
        "confident_all_factors": round(float(confident.float().mean()), 3),
        "grainy": round(float((grain(out) > GRAIN_LIMIT).float().mean()), 3),
        "share_of_fair_share": shares,
        "min_share_of_fair_share": min_share,
        "ms_per_image": round(1e3 * seconds / count, 1),
        "samples": out[:64],
    }


def eval_inversion(dn: Denoiser, count: int, steps: int) -> dict[str, Any]:
    from worker.training.aligned import generate

    images, _ = generate(HELD_OUT_SEED, count)
    x0 = from_uint8(images)
    grid = timestep_grid(steps, dn.num_train_timesteps)
    refined = {}
    with torch.no_grad():
        for refine in (0, 1, 2):
            traj = ddim_invert(dn, x0, grid, fixed_point_iters=refine)
            values = psnr(ddim_sample(dn, traj.x_T, grid), x0)
            refined[refine] = {
                "mean_db": round(float(np.mean(values)), 2),
                "min_db": round(float(np.min(values)), 2),
            }
        maps = ddpm_invert(dn, x0, grid, generator=torch.Generator().manual_seed(0))
        exact = ddim_sample(dn, maps.x_T, grid, eta=maps.eta, noises=maps.zs)
    return {
        "count": count,
        "steps": steps,
        "ddim_psnr_mean_db": refined[0]["mean_db"],
        "ddim_psnr_min_db": refined[0]["min_db"],
        "ddim_psnr_by_refine": refined,
        "ddpm_edit_friendly_max_abs_error": float((exact - x0).abs().max()),
    }


def _twins(factor: str, pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[Labels]]:
    """Pairs (A, B) equal in every factor but ``factor``, drawn with the same jitter."""
    rng = np.random.default_rng(seed)
    a_imgs, b_imgs, b_labels = [], [], []
    index = list(FACTORS).index(factor)
    for _ in range(pairs):
        values = [int(rng.integers(len(v))) for v in FACTORS.values()]
        other = list(values)
        other[index] = (values[index] + 1 + int(rng.integers(len(FACTORS[factor]) - 1))) % len(
            FACTORS[factor]
        )
        jitter_seed = int(rng.integers(2**31))
        a_imgs.append(render(Labels(*values), np.random.default_rng(jitter_seed)))
        b_imgs.append(render(Labels(*other), np.random.default_rng(jitter_seed)))
        b_labels.append(Labels(*other))
    return np.stack(a_imgs), np.stack(b_imgs), b_labels


def eval_swap(
    dn: Denoiser, clf: AttributeClassifier, pairs: int, steps: int, refine: int = 0
) -> dict[str, Any]:
    """Swap test; both twins DDIM-inverted with ``refine`` fixed-point iterations per step."""
    grid = timestep_grid(steps, dn.num_train_timesteps)
    table: dict[str, Any] = {}
    for i, factor in enumerate(CONTENT_FACTORS):
        a_imgs, b_imgs, b_labels = _twins(factor, pairs, seed=100 + i)
        xa, xb = from_uint8(a_imgs), from_uint8(b_imgs)
        with torch.no_grad():
            xa_T = ddim_invert(dn, xa, grid, fixed_point_iters=refine).x_T
            xb_T = ddim_invert(dn, xb, grid, fixed_point_iters=refine).x_T
            with dn.hooks.capture_h("swap.record") as cap:
                ddim_sample(dn, xb_T, grid)
            with dn.hooks.edit_h("swap.replace", lambda h, t: cap.at(t).to(h.dtype)):
                out = ddim_sample(dn, xa_T, grid)
        pred = clf.predict(out.clamp(-1, 1))
        target = torch.from_numpy(label_array(b_labels))
        column = list(FACTORS).index(factor)
        follows = (pred[factor][0] == target[:, column]).float().mean()
        kept = {
            other: round(float((pred[other][0] == target[:, j]).float().mean()), 3)
            for j, other in enumerate(FACTORS)
            if other != factor
        }
        table[factor] = {"follows_h": round(float(follows), 3), "other_factors_kept": kept}
    return {"pairs": pairs, "steps": steps, "refine": refine, "table": table}


def eval_h_weight(dn: Denoiser, count: int = 32) -> dict[str, Any]:
    """How much eps depends on h: relative change when h is zeroed or swapped between samples."""
    from worker.training.aligned import generate

    images, _ = generate(HELD_OUT_SEED + 7, count)
    x0 = from_uint8(images)
    gen = torch.Generator().manual_seed(0)
    ab = dn.schedule.alphas_cumprod
    rows = {}
    for t in (900, 600, 300, 100):
        noise = dn.noise(x0.shape, gen)
        x_t = ab[t].sqrt() * x0 + (1 - ab[t]).sqrt() * noise
        with torch.no_grad():
            state = dn.down_mid(x_t, t)
            eps = dn.up(state)
            zero = dn.up(state, h=torch.zeros_like(state.h))
            swapped = dn.up(state, h=state.h.roll(1, dims=0))
        rows[t] = {
            "zero_h": round(float((zero - eps).norm() / eps.norm()), 4),
            "swap_h": round(float((swapped - eps).norm() / eps.norm()), 4),
        }
    return {"count": count, "relative_eps_change": rows}


def eval_text(
    dn: Denoiser, clf: AttributeClassifier, count: int, steps: int, scales: list[float],
    etas: tuple[float, ...] = (0.0,),
) -> dict[str, Any]:  # fmt: skip
    """Captions of random labels; per guidance scale, how often the classifier agrees.

    Two prompt sets over the same labels: naming shape and colour only ("a red
    triangle", the issue's figure), and the full caption naming every factor.
    """
    rng = np.random.default_rng(HELD_OUT_SEED + 9)
    from worker.training.aligned import random_labels

    labels = [random_labels(rng) for _ in range(count)]
    prompt_sets = {
        "shape+colour": [lab.caption(frozenset({"shape", "colour"})) for lab in labels],
        "full": [lab.caption() for lab in labels],
    }
    y = label_array(labels)
    grid = timestep_grid(steps, dn.num_train_timesteps)
    rows = []
    for (kind, prompts), scale, eta in itertools.product(prompt_sets.items(), scales, etas):
        gen = torch.Generator().manual_seed(0)
        x_T = dn.noise((count, *dn.sample_shape), gen)
        start = time.perf_counter()
        with torch.no_grad():
            outs = [
                dn.decode(ddim_sample(dn, x_T[i : i + 64], grid,
                                      cond=dn.conditioning(prompts[i : i + 64], scale),
                                      eta=eta, generator=gen))
                for i in range(0, count, 64)
            ]  # fmt: skip
        seconds = time.perf_counter() - start
        x = torch.cat(outs).clamp(-1, 1)
        pred = clf.predict(x)
        agree = {name: (pred[name][0].numpy() == y[:, j]) for j, name in enumerate(FACTORS)}
        # the valid head's reading (> 0.9), where the classifier has one: a sample it
        # calls invalid (blank, noise, grain) counts as not following its prompt
        valid = np.ones(count, bool)
        if "valid" in pred:
            valid = (pred["valid"][0].numpy() == 1) & (pred["valid"][1].numpy() > 0.9)
        both = agree["shape"] & agree["colour"]
        rows.append({
            "prompts": kind,
            "guidance": scale,
            "eta": eta,
            "shape_and_colour": round(float(both.mean()), 3),
            "all_factors": round(float(np.all(list(agree.values()), axis=0).mean()), 3),
            **{name: round(float(a.mean()), 3) for name, a in agree.items()},
            "valid": round(float(valid.mean()), 3),
            "grainy": round(float((grain(x) > GRAIN_LIMIT).float().mean()), 3),
            "shape_and_colour_and_valid": round(float((both & valid).mean()), 3),
            "ms_per_image": round(1e3 * seconds / count, 1),
        })  # fmt: skip
        print("text:", json.dumps(rows[-1]), flush=True)
    return {"count": count, "steps": steps, "rows": rows}


def eval_classifier(clf: AttributeClassifier, count: int) -> dict[str, float]:
    from worker.training.aligned import generate

    images, labels = generate(HELD_OUT_SEED + 1, count)
    pred = clf.predict(from_uint8(images))
    y = label_array(labels)
    return {
        name: round(float((pred[name][0].numpy() == y[:, i]).mean()), 4)
        for i, name in enumerate(FACTORS)
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="models/shapes32-ddpm")
    p.add_argument("--classifier", default="models/shapes32-classifier")
    sections = ["classifier", "inversion", "samples", "h_weight", "swap", "text"]
    p.add_argument("--only", nargs="+", choices=sections, default=sections[:-1])
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--sample-steps", type=int, default=50)
    p.add_argument("--etas", nargs="+", type=float, default=[0.0, 1.0])
    p.add_argument("--held-out", type=int, default=64)
    p.add_argument("--swap-refine", type=int, nargs="+", default=[0, 1],
                   help="swap test: inversion refinements to run")  # fmt: skip
    p.add_argument("--pairs", type=int, default=64)
    p.add_argument("--grid-png", help="write a grid of 64 samples here")
    p.add_argument("--text-model", default="models/shapes32-text", help="for the text section")
    p.add_argument("--guidance", nargs="+", type=float, default=[1.0, 2.0, 3.0, 5.0, 7.5])
    p.add_argument("--text-etas", nargs="+", type=float, default=[0.0],
                   help="text section: DDIM eta (1: fresh noise at each step)")  # fmt: skip
    p.add_argument("--json", dest="json_out")
    p.add_argument("--card", help="write the measured part of the model card here (markdown)")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    dn = load_denoiser(args.model, device="cpu", dtype="float32")
    clf = AttributeClassifier.load(args.classifier)
    results: dict[str, Any] = {}
    if "classifier" in args.only:
        results["classifier_accuracy"] = eval_classifier(clf, 2048)
        print("classifier accuracy on 2048 fresh images:", results["classifier_accuracy"])
    if "inversion" in args.only:
        results["inversion"] = eval_inversion(dn, args.held_out, 50)
        print("inversion:", results["inversion"])
    if "samples" in args.only:
        results["samples"] = []
        for eta in args.etas:
            res = eval_samples(dn, clf, args.samples, args.sample_steps, eta)
            grid_images = res.pop("samples")
            results["samples"].append(res)
            print(f"samples (eta={eta}):", json.dumps(res))
            if args.grid_png and eta == args.etas[-1]:
                _save_grid(grid_images, args.grid_png)
    if "text" in args.only:
        tm = load_denoiser(args.text_model, device="cpu", dtype="float32")
        results["text"] = eval_text(tm, clf, 128, 25, args.guidance, tuple(args.text_etas))
    if "h_weight" in args.only:
        results["h_weight"] = eval_h_weight(dn)
        print("eps change when h is zeroed / swapped:", results["h_weight"]["relative_eps_change"])
    if "swap" in args.only:
        results["swap"] = [eval_swap(dn, clf, args.pairs, 50, r) for r in args.swap_refine]
        for res in results["swap"]:
            print(f"\nswap test (inversion refine {res['refine']}): share of outputs whose "
                  "factor follows the swapped-in h")  # fmt: skip
            print(f"{'factor':<10}{'follows h':>10}   other factors kept")
            for factor, row in res["table"].items():
                print(f"{factor:<10}{row['follows_h']:>10.3f}   {row['other_factors_kept']}")
    write_json(args.json_out, results)
    if args.card:
        write_card(args.card, args.model, results)
    return 0


def write_card(path: str, model: str, results: dict[str, Any]) -> None:
    """The measured part of a model card, in markdown, from this run's results."""
    from pathlib import Path

    training = json.loads((Path(model) / "training.json").read_text())
    lines = [
        "## Measured (`python -m benchmarks.model_quality`)",
        "",
        f"Training: {training['steps']} steps, {training['train_minutes']} min on this 2-core CPU, "
        f"{training['parameters']:,} parameters, final loss (mean of the last 200 steps) "
        f"{training['final_loss_mean_last_200']}.",
        "",
    ]
    if "inversion" in results:
        inv = results["inversion"]
        exact = inv["ddpm_edit_friendly_max_abs_error"]
        lines += [
            f"- 50-step DDIM inversion of {inv['count']} held-out generator images: mean "
            f"reconstruction PSNR {inv['ddim_psnr_mean_db']} dB (min {inv['ddim_psnr_min_db']}); "
            f"edit-friendly DDPM inversion max abs error {exact:.2e}.",
        ]
        for refine, row in inv.get("ddim_psnr_by_refine", {}).items():
            lines.append(
                f"  - with {refine} fixed-point iteration(s) per inversion step: mean "
                f"{row['mean_db']} dB, min {row['min_db']} dB."
            )
    for row in results.get("samples", []):
        lines.append(
            f"- {row['count']} samples, {row['steps']} DDIM steps, eta {row['eta']}: "
            f"{100 * row['confident_all_factors']:.1f}% read valid and classified with confidence "
            f"> 0.9 on every factor, {100 * row['grainy']:.1f}% grainy; smallest share of a "
            "factor value / its fair share: "
            f"{row['min_share_of_fair_share']}; shares: {json.dumps(row['share_of_fair_share'])}."
        )
    if "h_weight" in results:
        lines += ["", "How much eps depends on h (relative change of eps on held-out x_t):", ""]
        lines += ["| t | h zeroed | h of another image |", "|---|---|---|"]
        for t, row in results["h_weight"]["relative_eps_change"].items():
            lines.append(f"| {t} | {row['zero_h']} | {row['swap_h']} |")
    if "swap" in results:
        lines += ["", "Swap test (h replaced at every step by a twin's; share that follows h; "
                  "twins inverted with `refine` fixed-point iterations per step):", ""]  # fmt: skip
        lines += ["| factor | refine | follows h | other factors kept |", "|---|---|---|---|"]
        for res in results["swap"]:
            for factor, row in res["table"].items():
                lines.append(f"| {factor} | {res['refine']} | {row['follows_h']} | "
                             f"{row['other_factors_kept']} |")  # fmt: skip
    if "text" in results:
        lines += [
            "",
            f"Text model: {results['text']['count']} captions, "
            f"{results['text']['steps']} DDIM steps; classifier agreement by guidance:",
            "",
        ]
        lines += [
            "| prompts | guidance | eta | shape and colour | all factors | " + " | ".join(FACTORS)
            + " | valid | grainy | shape and colour, valid |",
            "|---|---|---|---|---|" + "---|" * (len(FACTORS) + 3),
        ]  # fmt: skip
        for r in results["text"]["rows"]:
            lines.append(f"| {r['prompts']} | {r['guidance']} | {r['eta']} | "
                         f"{r['shape_and_colour']} | "
                         f"{r['all_factors']} | "
                         + " | ".join(str(r[f]) for f in FACTORS)
                         + f" | {r['valid']} | {r['grainy']} | "
                         f"{r['shape_and_colour_and_valid']} |")  # fmt: skip
    if "classifier_accuracy" in results:
        lines += ["", f"Classifier used as the judge: accuracy {results['classifier_accuracy']}."]
    Path(path).write_text("\n".join(lines) + "\n")


def _save_grid(images: torch.Tensor, path: str) -> None:
    from worker.engine.images import to_pil

    tiles = to_pil(images)
    size = tiles[0].size[0]
    side = int(len(tiles) ** 0.5)
    from PIL import Image

    canvas = Image.new("RGB", (side * size, side * size))
    for k, tile in enumerate(tiles[: side * side]):
        canvas.paste(tile, ((k % side) * size, (k // side) * size))
    canvas.resize((side * size * 4, side * size * 4), Image.Resampling.NEAREST).save(path)


if __name__ == "__main__":
    sys.exit(main())
