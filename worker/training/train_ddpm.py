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
import math
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DModel
from tqdm import tqdm

from worker.training.shapes import generate


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


def batch_images(seed: int, step: int, batch: int) -> torch.Tensor:
    images, _ = generate(seed * 1_000_003 + step, batch)
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def export(ema: UNet2DModel, out: Path, meta: dict[str, object]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    copy.deepcopy(ema).to(torch.float16).save_pretrained(out, safe_serialization=True)
    DDPMScheduler(beta_schedule="linear", num_train_timesteps=1000).save_config(out)
    (out / "training.json").write_text(json.dumps(meta, indent=2) + "\n")


def train(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    ckpt_path = work / "checkpoint.pt"
    unet = build_unet()
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    step, seconds = 0, 0.0
    if ckpt_path.exists():
        # our own checkpoint, written by this script on this machine
        state = torch.load(ckpt_path, weights_only=True)
        unet.load_state_dict(state["unet"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        step, seconds = int(state["step"]), float(state["seconds"])
        print(f"resumed at step {step} ({seconds / 60:.1f} min trained)")
    ab = DDPMScheduler(beta_schedule="linear").alphas_cumprod
    gen = torch.Generator().manual_seed(args.seed + step)
    deadline = time.monotonic() + args.minutes * 60
    bar = tqdm(initial=step, total=args.steps, desc="train", unit="step")
    losses: list[float] = []
    while step < args.steps and time.monotonic() < deadline:
        start = time.monotonic()
        x0 = batch_images(args.seed, step, args.batch)
        t = torch.randint(0, 1000, (args.batch,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        noise = noise + args.offset_noise * torch.randn(x0.shape[0], 3, 1, 1, generator=gen)
        a = ab[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        loss = torch.nn.functional.mse_loss(unet(x_t, t).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / args.warmup)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters(), strict=True):
                pe.lerp_(p, 1 - decay)
        step += 1
        seconds += time.monotonic() - start
        losses.append(float(loss))
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if step % args.save_every == 0 or step == args.steps:
            state = {"unet": unet.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict()}
            torch.save({**state, "step": step, "seconds": seconds}, ckpt_path)
    bar.close()
    state = {"unet": unet.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict()}
    torch.save({**state, "step": step, "seconds": seconds}, ckpt_path)
    meta = {
        "steps": step,
        "train_minutes": round(seconds / 60, 1),
        "batch": args.batch,
        "lr": args.lr,
        "ema": args.ema,
        "offset_noise": args.offset_noise,
        "threads": args.threads,
        "final_loss_mean_last_200": round(float(np.mean(losses[-200:])), 5) if losses else None,
        "parameters": sum(p.numel() for p in unet.parameters()),
        "seed": args.seed,
    }
    export(ema, Path(args.out), meta)
    print(json.dumps(meta))
    if not math.isfinite(meta["final_loss_mean_last_200"] or 0.0):
        raise SystemExit("training diverged")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default="models/shapes32-ddpm")
    p.add_argument("--work-dir", default="var/train/shapes32-ddpm")
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--minutes", type=float, default=float("inf"))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--offset-noise", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    train(p.parse_args())


if __name__ == "__main__":
    main()
