"""Engine-backed commands of the ``editserve`` CLI (imported lazily by ``service.cli``)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from worker.engine import EngineError, load_denoiser
from worker.engine.images import load_images, to_pil
from worker.engine.reconstruct import reconstruct


def reconstruct_command(args: argparse.Namespace) -> int:
    try:
        denoiser = load_denoiser(args.model, device=args.device, dtype=args.dtype)
        c, h, w = denoiser.image_shape
        images = load_images([Path(args.image)], (h, w), c, args.fit)
        cond = denoiser.conditioning([args.prompt]) if denoiser.conditional else None
        start = time.perf_counter()
        with tqdm(total=1, desc="reconstruct", unit="call", file=sys.stderr) as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.n = done
                bar.refresh()

            result = reconstruct(
                denoiser,
                images,
                steps=args.steps,
                inversion=args.inversion,
                grid=args.grid,
                cond=cond,
                generator=torch.Generator().manual_seed(args.seed),
                progress=progress,
            )
        seconds = time.perf_counter() - start
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    to_pil(result.images)[0].save(out)
    print(
        f"model={denoiser.name} inversion={args.inversion} steps={args.steps} "
        f"psnr_db={result.psnr_db[0]:.2f} seconds={seconds:.2f} out={out}"
    )
    return 0
