"""Methods B, C and D measured on the shipped models, the classifier as judge.

B (boundaries): labelled held-out generator images (100 train, 100 test) for a
binary attribute (a factor's value vs the rest); the step the mixing search picks;
SVM held-out accuracy on x_t0 and h at that step and at 200 / 500 / 800; then
held-out images lacking the value, moved to signed distance d (multiples of the
training set's median |distance|) in one step at t0 (x and h), denoised with
eta = 1: success (the value appears) and preservation (other factors unchanged).

D (style noise): a style set of generator images sharing their style factors
(colour, background) with varied content; 64 samples started from the fitted
distribution (direct and signal-leak forms) against 64 from N(0, I). Reported:
the distance between the style set's colour statistics (per-image RGB mean and
std, averaged) and the samples', and the share of samples the classifier gives
the style's colour and background. With ``--text-model``, the same with prompts
naming a shape, and the share whose shape follows the prompt (adherence kept).

    python -m benchmarks.methods_bcd            # B and D
    python -m benchmarks.methods_bcd --only d
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from worker.engine import Denoiser, ddim_sample, load_denoiser
from worker.engine.classifier import AttributeClassifier
from worker.engine.methods.boundaries import edit_across, find_mixing_step, fit_boundary, invert_to
from worker.engine.methods.style_noise import fit_style_noise, initial_noise
from worker.engine.schedule import timestep_grid
from worker.training.shapes import FACTORS, SHAPES, Labels, render

STYLE_SEED = 3_200_000_000


def _style_set(colour: str, background: str, count: int) -> torch.Tensor:
    rng = np.random.default_rng(STYLE_SEED)
    c, b = list(FACTORS["colour"]).index(colour), list(FACTORS["background"]).index(background)
    images = []
    for _ in range(count):
        shape, size, pos = (
            int(rng.integers(len(FACTORS[f]))) for f in ("shape", "size", "position")
        )
        images.append(render(Labels(shape, size, pos, c, b), rng))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x


def _labelled(count: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    from worker.training.shapes import generate, label_array

    images, labels = generate(seed, count)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x, label_array(labels)


def eval_boundaries(
    dn: Denoiser, clf: AttributeClassifier, targets: dict[str, str], count: int, steps: int
) -> dict[str, Any]:
    """SVM accuracy at the searched and fixed steps; edit success/preservation over d."""
    cols = list(FACTORS)
    x, y = _labelled(2 * count, STYLE_SEED + 1)
    start = time.perf_counter()
    search = find_mixing_step(dn, dn.encode(x[:64]), steps=steps, tol=0.02)
    search_s = time.perf_counter() - start
    print(f"mixing step: t0 = {search.t0} (search {search_s:.1f} s); radius by t:",
          {t: round(m, 3) for t, (m, _) in search.radius.items()}, flush=True)  # fmt: skip
    out: dict[str, Any] = {"t0": search.t0, "search_seconds": round(search_s, 1), "targets": {}}
    edit_x, edit_y = _labelled(256, STYLE_SEED + 2)
    for factor, value in targets.items():
        j, v = cols.index(factor), FACTORS[factor].index(value)
        labels = torch.from_numpy((y[:, j] == v).astype(np.int64))
        rows: dict[str, Any] = {"accuracy_x": {}, "accuracy_h": {}}
        for t0 in sorted({search.t0, 200, 500, 800}):
            t = time.perf_counter()
            x_t0, h, grid = invert_to(dn, dn.encode(x), t0, steps)
            bx = fit_boundary(x_t0, labels, held_out=0.5)
            bh = fit_boundary(h, labels, held_out=0.5)
            rows["accuracy_x"][t0], rows["accuracy_h"][t0] = (
                round(bx.accuracy, 3),
                round(bh.accuracy, 3),
            )
            if t0 == search.t0:
                rows["fit_seconds_incl_inversion"] = round(time.perf_counter() - t, 1)
                boundary, h_boundary, fit_grid = bx, bh, grid
                scale = float(bx.distance(x_t0).abs().median())
        pick = np.flatnonzero(edit_y[:, j] != v)[:32]
        xe, ye = edit_x[pick], edit_y[pick]
        x_t0, _, _ = invert_to(dn, dn.encode(xe), search.t0, steps)
        others = [k for k in range(len(cols)) if k != j]
        edits = []
        for k in (0.0, 1.0, 2.0, 4.0, 8.0):
            d = k * scale
            with torch.no_grad():
                res = edit_across(dn, x_t0, fit_grid, boundary, d, h_boundary=h_boundary, eta=1.0,
                                  generator=torch.Generator().manual_seed(0))  # fmt: skip
            pred = clf.predict(dn.decode(res).clamp(-1, 1))
            p = np.stack([pred[name][0].numpy() for name in FACTORS], axis=1)
            kept = np.all(p[:, others] == ye[:, others], axis=1)
            edits.append({"d": round(d, 2), "success": round(float((p[:, j] == v).mean()), 3),
                          "preservation": round(float(kept.mean()), 3)})  # fmt: skip
        rows["edits"] = edits
        out["targets"][f"{factor}={value}"] = rows
        print(f"boundary {factor}={value}:", json.dumps(rows), flush=True)
    return out


def colour_stats(images: torch.Tensor) -> torch.Tensor:
    """(6,): the set's mean over images of per-image RGB mean and RGB std, in [0, 1] units."""
    x = (images.clamp(-1, 1) + 1) / 2
    return torch.cat([x.mean((2, 3)), x.std((2, 3))], dim=1).mean(0)


def eval_style(
    dn: Denoiser,
    clf: AttributeClassifier,
    colour: str,
    background: str,
    style_images: int,
    count: int,
    steps: int,
    eta: float,
    prompts: list[str] | None = None,
    guidance: float = 1.0,
) -> list[dict[str, Any]]:
    style_x = _style_set(colour, background, style_images)
    target = colour_stats(style_x)
    style = fit_style_noise(dn.encode(style_x))
    grid = timestep_grid(steps, dn.num_train_timesteps)
    ab_T = float(dn.schedule.alphas_cumprod[grid[-1]])
    cond = dn.conditioning(prompts, guidance_scale=guidance) if prompts else None
    rows = []
    for start in ("plain", "direct", "signal_leak"):
        gen = torch.Generator().manual_seed(5)
        if start == "plain":
            x_T = torch.randn(count, *dn.sample_shape, generator=gen)
        else:
            x_T = initial_noise(style, count, ab_T, start, gen)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        with torch.no_grad():
            out = dn.decode(ddim_sample(dn, x_T, grid, cond=cond, eta=eta, generator=gen))
        seconds = time.perf_counter() - t0
        pred = clf.predict(out.clamp(-1, 1))
        col = FACTORS["colour"].index(colour)
        bg = FACTORS["background"].index(background)
        row: dict[str, Any] = {
            "start": start,
            "colour_stats_distance": round(float((colour_stats(out) - target).norm()), 4),
            "takes_colour": round(float((pred["colour"][0] == col).float().mean()), 3),
            "takes_background": round(float((pred["background"][0] == bg).float().mean()), 3),
            "s_per_image": round(seconds / count, 3),
        }
        if prompts:
            wanted = torch.tensor([next(SHAPES.index(w) for w in p.split() if w in SHAPES)
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
    p.add_argument("--only", nargs="+", choices=["b", "d"], default=["b", "d"])
    p.add_argument("--labelled", type=int, default=100, help="B: train (and as many test) images")
    p.add_argument("--count", type=int, default=64)
    p.add_argument("--style-images", type=int, default=8)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--json", dest="json_out")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    dn = load_denoiser(args.model, device="cpu", dtype="float32")
    clf = AttributeClassifier.load(args.classifier)
    results: dict[str, Any] = {"d": []}
    if "b" in args.only:
        targets = {"colour": "red", "size": "large", "shape": "square", "position": "top left"}
        results["b"] = eval_boundaries(dn, clf, targets, args.labelled, 40)
    for colour, background in (("red", "white"), ("yellow", "black")) if "d" in args.only else ():
        for eta in (0.0, 1.0):
            rows = eval_style(dn, clf, colour, background, args.style_images, args.count,
                              args.steps, eta)  # fmt: skip
            results["d"].append({"style": [colour, background], "eta": eta, "rows": rows})
    if args.text_model:
        tm = load_denoiser(args.text_model, device="cpu", dtype="float32")
        rng = np.random.default_rng(9)
        for colour, background in (("red", "white"), ("yellow", "black")):
            # full captions (the model's training format) in the style's colours, random content
            c, b = FACTORS["colour"].index(colour), FACTORS["background"].index(background)
            prompts = [
                Labels(
                    int(rng.integers(3)), int(rng.integers(2)), int(rng.integers(4)), c, b
                ).caption()
                for _ in range(args.count)
            ]
            rows = eval_style(tm, clf, colour, background, args.style_images, args.count,
                              args.steps, 1.0, prompts, guidance=3.0)  # fmt: skip
            results.setdefault("d_text", []).append({"style": [colour, background], "rows": rows})
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
