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
                refine=args.refine,
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


def inject_command(args: argparse.Namespace) -> int:
    """`editserve edit inject`: method A locally, with the API's parameter schema and defaults."""
    from pydantic import ValidationError

    from contract.methods.inject import InjectParams
    from service.client import parse_value
    from worker.engine.methods.inject import content_trajectory, inject_content
    from worker.engine.sampling import ddim_invert
    from worker.engine.schedule import timestep_grid

    try:
        raw = dict(item.partition("=")[::2] for item in args.param)
        params = InjectParams.model_validate({k: parse_value(v) for k, v in raw.items()})
    except ValidationError as exc:
        first = exc.errors()[0]
        print(f"error: --param {'.'.join(map(str, first['loc']))}: {first['msg']}", file=sys.stderr)
        return 2
    try:
        denoiser = load_denoiser(args.model, device=args.device, dtype=args.dtype)
        c, h, w = denoiser.image_shape
        content = load_images([Path(args.content)], (h, w), c, params.fit)
        style = load_images([Path(args.style)], (h, w), c, params.fit)
        grid = timestep_grid(params.steps, denoiser.num_train_timesteps, params.grid)
        with tqdm(total=3 * len(grid) - 2, desc="inject", unit="step", file=sys.stderr) as bar:

            def tick(_i: int, _n: int) -> None:
                bar.update(1)

            trajectory = content_trajectory(
                denoiser, denoiser.encode(content), grid, progress=tick, refine=params.refine
            )
            x_T = ddim_invert(
                denoiser, denoiser.encode(style), grid, fixed_point_iters=params.refine,
                progress=tick,
            ).x_T  # fmt: skip
            x0 = inject_content(
                denoiser, x_T, trajectory, params,
                generator=torch.Generator().manual_seed(args.seed), progress=tick,
            )  # fmt: skip
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    to_pil(denoiser.decode(x0))[0].save(out)
    print(f"model={denoiser.name} method=inject {params.model_dump_json()} out={out}")
    return 0
