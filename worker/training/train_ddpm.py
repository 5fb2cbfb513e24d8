"""Train the shipped unconditional pixel DDPM on the shapes generator.

Recipe: ``UNet2DModel`` with three downsamples to a 4x4x128 bottleneck (h-space),
linear betas 1e-4..0.02 over 1000 steps, epsilon prediction, offset noise (the
probe's colour collapse: the model could not estimate an image's mean colour at
high noise), AdamW with warm-up, EMA weights. Data is drawn fresh each step from
the seeded generator, so there is no fixed training set to overfit.

Resumable: a checkpoint (weights, EMA, optimiser, step) is written every
``--save-every`` steps under ``--work-dir``; rerunning the same command continues.
The EMA weights are exported as fp16 safetensors in a diffusers folder.

    python -m worker.training.train_ddpm --out models/shapes32-ddpm --minutes 60
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch
from diffusers import UNet2DModel

from worker.engine.images import from_uint8
from worker.training.domains import domain
from worker.training.loop import add_common_arguments, export_scheduler, train_noise_model


def build_unet() -> UNet2DModel:
    return UNet2DModel(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(32, 64, 128, 128),
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=16,
        attention_head_dim=32,
    )


def batch_images(seed: int, step: int, batch: int, domain_name: str = "aligned") -> torch.Tensor:
    images, _ = domain(domain_name).generate(seed * 1_000_003 + step, batch)
    return from_uint8(images)


def export(ema: UNet2DModel, out: Path, meta: dict[str, object]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    copy.deepcopy(ema).to(torch.float16).save_pretrained(out, safe_serialization=True)
    export_scheduler(meta).save_config(out)
    (out / "training.json").write_text(json.dumps(meta, indent=2) + "\n")


def twin_batch(seed: int, step: int, batch: int, domain_name: str = "aligned") -> torch.Tensor:
    """``[A; B]``: ``batch // 2`` style twins (same content and jitter, another style)."""
    a, b = domain(domain_name).style_twins(seed * 1_000_003 + step, batch // 2)
    images = np.concatenate([a, b])
    return from_uint8(images)


def train(args: argparse.Namespace) -> None:
    def batch(step: int, _gen: torch.Generator) -> tuple[torch.Tensor, dict[str, object]]:
        if args.h_invariance > 0:
            return twin_batch(args.seed, step, args.batch, args.domain), {}
        return batch_images(args.seed, step, args.batch, args.domain), {}

    unet = build_unet()
    if args.init:  # fine-tune from exported weights (a fresh run only; a checkpoint wins)
        unet = UNet2DModel.from_pretrained(args.init, torch_dtype=torch.float32)
    ema, meta = train_noise_model(args, unet, batch, h_invariance=args.h_invariance)
    meta["init"] = args.init
    meta["domain"] = args.domain
    export(ema, Path(args.out), meta)
    print(json.dumps(meta))


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(p, out="models/shapes32-ddpm", work_dir="var/train/shapes32-ddpm")
    p.add_argument("--init", default="", help="start from these exported weights")
    p.add_argument("--domain", default="aligned", help="the generator (one: aligned)")
    p.add_argument(
        "--h-invariance",
        type=float,
        default=0.0,
        help="weight of the style twins' h distance (0: plain batches, no twins)",
    )
    train(p.parse_args())


if __name__ == "__main__":
    main()
