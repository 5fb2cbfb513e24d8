"""Methods B, C and D measured on the shipped models, the classifier as judge.

D (style noise): a style set of generator images sharing their style factors
(colour, background) with varied content; 64 samples started from the fitted
distribution (direct and signal-leak forms) against 64 from N(0, I). Reported:
the distance between the style set's colour statistics (per-image RGB mean and
std, averaged) and the samples', and the share of samples the classifier gives
the style's colour and background. With ``--text-model``, the same with prompts
naming a shape, and the share whose shape follows the prompt (adherence kept).

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
    p.add_argument("--only", nargs="+", choices=["d"], default=["d"])
    p.add_argument("--count", type=int, default=64)
    p.add_argument("--style-images", type=int, default=8)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--json", dest="json_out")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    dn = load_denoiser(args.model, device="cpu", dtype="float32")
    clf = AttributeClassifier.load(args.classifier)
    results: dict[str, Any] = {"d": []}
    for colour, background in (("red", "white"), ("yellow", "black")):
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
