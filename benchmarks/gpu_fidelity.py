"""fp16 against fp32 on a GPU: do the edits the workers run in fp16 match fp32, and how fast?

On the shipped unconditional model, one run, each dtype on the same inputs:

- reconstruct: held-out images DDIM-inverted (``refine`` 1) and sampled back; PSNR;
- samples: DDIM (eta 0) from the same x_T; the share whose classifier labels (all five
  factors) agree with fp32's, and the mean absolute pixel difference to fp32;
- inject (method A, the service's defaults and the best measured config, 50 and 1000
  steps): the same agreement and difference, and the share that keep the content's
  content factors / take the style's style factors;
- edit-friendly (DDPM) inversion: the largest error of the exact round trip;
- time per image of each, the whole batch on the GPU at once.

Needs a CUDA device (the numbers are about fp16 on a GPU; on a CPU use bfloat16
through ``--low bfloat16`` and expect it to be slow).

    python -m benchmarks.gpu_fidelity                  # about 2 minutes on one H100
    python -m benchmarks.gpu_fidelity --images 256 --inject-steps 50
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from benchmarks import write_json
from benchmarks.methods_ae import (
    HELD_OUT_SEED,
    _differing_pairs,
    _judge,
    keeps_and_takes,
)
from contract.methods.inject import InjectParams
from worker.engine import Denoiser, ddim_invert, ddim_sample, ddpm_invert, load_denoiser
from worker.engine.classifier import AttributeClassifier
from worker.engine.images import from_uint8, psnr
from worker.engine.methods.inject import content_trajectory, inject_content
from worker.engine.schedule import timestep_grid
from worker.training.aligned import generate


def _timed(fn: Callable[[], torch.Tensor], device: torch.device) -> tuple[torch.Tensor, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    with torch.no_grad():
        out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out.float().cpu(), time.perf_counter() - start


def run_dtype(dn: Denoiser, args: argparse.Namespace, clf: AttributeClassifier) -> dict[str, Any]:
    dev = dn.device
    out: dict[str, Any] = {}
    images, _ = generate(HELD_OUT_SEED + 7, args.images)
    x0 = from_uint8(images).to(dev)
    grid = timestep_grid(args.steps, dn.num_train_timesteps)

    def reconstruct() -> torch.Tensor:
        x_T = ddim_invert(dn, x0, grid, fixed_point_iters=1).x_T
        return ddim_sample(dn, x_T, grid)

    rec, sec = _timed(reconstruct, dev)
    db = psnr(rec.clamp(-1, 1), x0)
    out["reconstruct"] = {
        "psnr_mean": round(float(np.mean(db)), 2),
        "psnr_min": round(min(db), 2),
        "ms_per_image": round(1000 * sec / args.images, 2),
        "images": rec,
    }
    gen = torch.Generator().manual_seed(0)
    x_T = dn.noise((args.images, *dn.sample_shape), gen).to(dev)
    samples, sec = _timed(lambda: ddim_sample(dn, x_T, grid), dev)
    out["samples"] = {"ms_per_image": round(1000 * sec / args.images, 2), "images": samples}

    maps_gen = torch.Generator().manual_seed(1)
    maps = ddpm_invert(dn, x0, grid, generator=maps_gen)
    with torch.no_grad():
        back = ddim_sample(dn, maps.x_T, maps.grid, eta=maps.eta, noises=maps.zs)
    out["edit_friendly_max_abs_error"] = float((back.float().cpu() - x0.float().cpu()).abs().max())

    content, style, c_lab, s_lab = _differing_pairs(args.pairs, HELD_OUT_SEED)
    content, style = content.to(dev), style.to(dev)
    out["inject"] = {}
    for steps in args.inject_steps:
        igrid = timestep_grid(steps, dn.num_train_timesteps, "linspace")
        for label, settings in (
            ("defaults", InjectParams()),
            ("clip_x0 g1 t_edit0", InjectParams(clip_x0=True, g=1.0, t_edit=0)),
        ):

            def inject(grid_: list[int] = igrid, s: InjectParams = settings) -> torch.Tensor:
                traj = content_trajectory(dn, content, grid_, refine=1)
                x_T_s = ddim_invert(dn, style, grid_, fixed_point_iters=1).x_T
                gens = [torch.Generator().manual_seed(i) for i in range(args.pairs)]
                return inject_content(dn, x_T_s, traj, s, generator=gens)

            result, sec = _timed(inject, dev)
            pred = _judge(clf, result)
            keeps, takes = keeps_and_takes(pred, c_lab, s_lab)
            out["inject"][f"{label}, {steps} steps"] = {
                "keeps_all_content": round(float(keeps.mean()), 3),
                "takes_all_style": round(float(takes.mean()), 3),
                "ms_per_pair": round(1000 * sec / args.pairs, 1),
                "images": result,
            }
    return out


def _agreement(clf: AttributeClassifier, a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    pa, pb = _judge(clf, a), _judge(clf, b)
    return {
        "labels_agree": round(float(np.all(pa == pb, axis=1).mean()), 3),
        "mean_abs_diff_px": round(float((a.clamp(-1, 1) - b.clamp(-1, 1)).abs().mean()) * 127.5, 2),
        "max_abs_diff_px": round(float((a.clamp(-1, 1) - b.clamp(-1, 1)).abs().max()) * 127.5, 1),
    }


def _line(what: str, a: float, b: float, agree: dict[str, float] | None = None) -> None:
    ratio = f"{b / a:>7.2f}x" if "ms" in what and a else " " * 8
    tail = ""
    if agree:
        diff = f"{agree['mean_abs_diff_px']} / max {agree['max_abs_diff_px']} px"
        tail = f"   labels agree {agree['labels_agree']}, |diff| mean {diff}"
    print(f"{what:<38}{a:>16}{b:>16}{ratio}{tail}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="models/shapes32-ddpm")
    p.add_argument("--classifier", default="models/shapes32-classifier")
    p.add_argument("--device", default="cuda")
    p.add_argument("--low", default="float16", choices=["float16", "bfloat16"])
    p.add_argument("--images", type=int, default=128, help="held-out images and samples")
    p.add_argument("--pairs", type=int, default=64, help="content/style pairs for method A")
    p.add_argument("--steps", type=int, default=50, help="reconstruct and sample steps")
    p.add_argument("--inject-steps", type=int, nargs="+", default=[50, 1000])
    p.add_argument("--json", dest="json_out")
    args = p.parse_args(argv)
    clf = AttributeClassifier.load(args.classifier)
    runs: dict[str, dict[str, Any]] = {}
    for dtype in ("float32", args.low):
        dn = load_denoiser(args.model, device=args.device, dtype=dtype)
        # warm-up: kernels, allocator
        with torch.no_grad():
            x = dn.noise((8, *dn.sample_shape), torch.Generator().manual_seed(0)).to(dn.device)
            ddim_sample(dn, x, timestep_grid(5, dn.num_train_timesteps))
        runs[dtype] = run_dtype(dn, args, clf)
        del dn
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    hi, lo = runs["float32"], runs[args.low]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    table: dict[str, Any] = {"device": device, "low": args.low}
    print(f"device: {device}; {args.low} against float32 on the same inputs\n")
    print(f"{'':<38}{'float32':>16}{args.low:>16}{'ratio':>8}   {args.low} vs float32")
    rec = (hi["reconstruct"], lo["reconstruct"])
    _line("reconstruct PSNR mean (dB)", rec[0]["psnr_mean"], rec[1]["psnr_mean"])
    _line("reconstruct PSNR min (dB)", rec[0]["psnr_min"], rec[1]["psnr_min"])
    table["reconstruct_psnr_mean"] = (rec[0]["psnr_mean"], rec[1]["psnr_mean"])
    table["reconstruct_psnr_min"] = (rec[0]["psnr_min"], rec[1]["psnr_min"])
    for name in ("reconstruct", "samples"):
        agree = _agreement(clf, hi[name]["images"], lo[name]["images"])
        a, b = hi[name]["ms_per_image"], lo[name]["ms_per_image"]
        _line(f"{name} ms per image", a, b, agree)
        table[name] = {"ms_per_image": (a, b), **agree}
    for key, h in hi["inject"].items():
        low = lo["inject"][key]
        agree = _agreement(clf, h["images"], low["images"])
        _line(f"A {key}: ms/pair", h["ms_per_pair"], low["ms_per_pair"], agree)
        for f in ("keeps_all_content", "takes_all_style"):
            _line(f"  {f}", h[f], low[f])
        table[f"inject {key}"] = {
            f: (h[f], low[f]) for f in ("ms_per_pair", "keeps_all_content", "takes_all_style")
        } | agree
    e_hi, e_lo = hi["edit_friendly_max_abs_error"], lo["edit_friendly_max_abs_error"]
    print(f"{'edit-friendly round trip max error':<38}{e_hi:>16.2e}{e_lo:>16.2e}")
    table["edit_friendly_max_abs_error"] = (e_hi, e_lo)
    write_json(args.json_out, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
