"""torch.compile'd U-Net calls (``EDITSERVE_COMPILE``) against eager, side by side.

On the shipped model, one process, eager and compiled interleaved call by call so
drift hits both:

- the U-Net call, ms per image, at batches that are buckets (1, 8) and one that is
  padded up to a bucket (3 -> 4);
- a whole job: ``reconstruct`` (50 steps, refine 1: 149 U-Net calls) of 1 and of 8
  images, which is what a ``reconstruct`` edit runs;
- the cost: compiling the worker's buckets (1, 2, 4, 8) before it is ready, with an
  empty Inductor cache (a fresh machine) unless ``--inductor-cache`` names a warm one;
- agreement: the largest |eps| difference and the reconstructions' PSNR.

    python -m benchmarks.compile_bench                 # CPU here
    python -m benchmarks.compile_bench --device cuda   # fp16 + CUDA graphs on a GPU
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from benchmarks import timed, write_json
from worker.engine.images import from_uint8


def _interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, sync: Callable[[], None]
) -> dict[str, float]:
    """Median seconds of each, the calls alternating; one untimed warm-up each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn, sync))
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="models/shapes32-ddpm")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=20, help="timed U-Net calls per batch")
    p.add_argument("--job-repeats", type=int, default=3, help="timed reconstructs per batch")
    p.add_argument("--inductor-cache", help="TORCHINDUCTOR_CACHE_DIR (default: a fresh one)")
    p.add_argument("--json", dest="json_out")
    args = p.parse_args(argv)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = args.inductor_cache or tempfile.mkdtemp(
        prefix="inductor-"
    )
    # imported after the cache folder is set: Inductor reads it at import
    from worker.boot import compile_model
    from worker.engine import load_denoiser
    from worker.engine.images import psnr
    from worker.engine.reconstruct import reconstruct
    from worker.training.aligned import generate

    eager = load_denoiser(args.model, name="eager", device=args.device, dtype=args.dtype)
    fast = load_denoiser(args.model, name="compiled", device=args.device, dtype=args.dtype)
    sync = torch.cuda.synchronize if eager.device.type == "cuda" else (lambda: None)
    print(
        f"device={eager.device} dtype={eager.dtype} torch={torch.__version__} "
        f"threads={torch.get_num_threads()} cache={os.environ['TORCHINDUCTOR_CACHE_DIR']}",
        file=sys.stderr,
    )
    start = time.perf_counter()
    compile_model(fast, args.max_batch)
    compile_s = time.perf_counter() - start
    result: dict[str, Any] = {
        "device": str(eager.device),
        "dtype": str(eager.dtype).removeprefix("torch."),
        "buckets": fast.compile_buckets,
        "compile_s": round(compile_s, 1),
        "unet_ms_per_image": {},
        "reconstruct_s": {},
    }
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    with torch.no_grad():
        for batch in (1, 3, 8):
            x = torch.randn(batch, *eager.sample_shape, generator=gen)
            worst = max(worst, float((fast.eps(x, 500) - eager.eps(x, 500)).abs().max()))
            calls: dict[str, Callable[[], object]] = {
                "eager": partial(eager.eps, x, 500),
                "compiled": partial(fast.eps, x, 500),
            }
            med = _interleaved(calls, args.repeats, sync)
            row = {k: round(1e3 * v / batch, 3) for k, v in med.items()}
            result["unet_ms_per_image"][batch] = row
        images_np, _ = generate(7_000_000, 8)
        images = from_uint8(images_np)
        agree = {}
        for batch in (1, 8):
            imgs = images[:batch]
            outs: dict[str, torch.Tensor] = {}

            def job(
                d: Any, key: str, imgs: torch.Tensor = imgs, outs: dict[str, Any] = outs
            ) -> None:
                outs[key] = reconstruct(d, imgs, steps=50, refine=1).images

            med = _interleaved(
                {"eager": lambda: job(eager, "eager"), "compiled": lambda: job(fast, "compiled")},
                args.job_repeats,
                sync,
            )
            result["reconstruct_s"][batch] = {k: round(v, 3) for k, v in med.items()}
            agree[batch] = round(min(psnr(outs["compiled"], outs["eager"])), 1)
    result["max_abs_eps_diff"] = worst
    result["reconstruct_psnr_compiled_vs_eager_min_db"] = agree

    print(f"\ncompiled buckets {result['buckets']} in {compile_s:.1f} s before the worker is ready")
    print(f"\n{'U-Net call, ms/image':<26}{'eager':>9}{'compiled':>10}{'speed-up':>10}")
    for batch, row in result["unet_ms_per_image"].items():
        note = " (padded to 4)" if batch == 3 else ""
        print(
            f"{f'batch {batch}{note}':<26}{row['eager']:>9.2f}{row['compiled']:>10.2f}"
            f"{row['eager'] / row['compiled']:>9.2f}x"
        )
    print(f"\n{'reconstruct 50 steps, s':<26}{'eager':>9}{'compiled':>10}{'speed-up':>10}")
    for batch, row in result["reconstruct_s"].items():
        print(
            f"{f'{batch} image(s)':<26}{row['eager']:>9.2f}{row['compiled']:>10.2f}"
            f"{row['eager'] / row['compiled']:>9.2f}x"
        )
    print(f"\nmax |eps compiled - eps eager| {worst:.2e}; reconstructions agree to >= "
          f"{min(agree.values()):.1f} dB PSNR")  # fmt: skip
    write_json(args.json_out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
