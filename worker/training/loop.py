"""The training loop both shipped diffusion models share.

The MSE to the noise (or to x0 or v, ``--prediction``) on the linear-beta DDPM
schedule with offset noise, AdamW with warm-up and gradient clipping, EMA weights, a
resumable checkpoint (weights, EMA, optimiser, step, seconds trained) every
``save_every`` steps, a progress bar with the running loss. Data is drawn fresh each
step from the seeded generator.
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDPMScheduler
from tqdm import tqdm

from worker.engine.denoiser import PREDICTION_TYPES

# (step, generator) -> (x0, extra keyword arguments for the model's forward)
BatchFn = Callable[[int, torch.Generator], tuple[torch.Tensor, dict[str, Any]]]


def prediction_target(
    prediction: str, x0: torch.Tensor, noise: torch.Tensor, ab: torch.Tensor
) -> torch.Tensor:
    """The regression target of ``prediction`` for x_t = sqrt(ab) x0 + sqrt(1 - ab) noise
    (``ab`` broadcast per sample): the noise, x0, or v = sqrt(ab) noise - sqrt(1 - ab) x0."""
    if prediction == "epsilon":
        return noise
    if prediction == "sample":
        return x0
    if prediction == "v_prediction":
        return ab.sqrt() * noise - (1 - ab).sqrt() * x0
    raise ValueError(f"prediction {prediction!r}: one of {', '.join(PREDICTION_TYPES)}")


def export_scheduler(meta: dict[str, Any]) -> DDPMScheduler:
    """The schedule every model here is trained on, with the run's prediction_type."""
    return DDPMScheduler(
        beta_schedule="linear",
        num_train_timesteps=1000,
        clip_sample=False,
        prediction_type=str(meta.get("prediction_type", "epsilon")),
    )


def skip_inputs(unet: Any, levels: int) -> list[tuple[Any, int]]:
    """(resnet, skip channels) of the up blocks at the ``levels`` lowest resolutions.

    An up-block resnet takes ``cat([hidden, skip])``: the skip's channels are the last
    ``conv1.in_channels - hidden`` input channels of its conv1 and conv_shortcut.
    """
    skips = [unet.conv_in.out_channels]
    for block in unet.down_blocks:
        skips += [r.conv2.out_channels for r in block.resnets]
        if block.downsamplers is not None:
            skips.append(block.downsamplers[0].out_channels)
    found: list[tuple[Any, int]] = []
    for block in unet.up_blocks[:levels]:
        for resnet in block.resnets:
            found.append((resnet, skips.pop()))
    return found


def cut_skips(unet: Any, levels: int) -> None:
    """Zero the weights that read the skip connections of the ``levels`` deepest up blocks.

    The model stays a plain ``UNet2DModel`` (it loads and runs as any diffusers
    checkpoint), but at those resolutions the decoder can only read h: the mid
    block's output becomes a real bottleneck. Called after every optimiser step.
    """
    with torch.no_grad():
        for resnet, channels in skip_inputs(unet, levels):
            resnet.conv1.weight[:, -channels:] = 0
            if resnet.conv_shortcut is not None:
                resnet.conv_shortcut.weight[:, -channels:] = 0


class SkipDropout:
    """Drop the skip connections the up blocks read, for training (issue #15's candidate).

    ``mode`` "sample": each sample loses all its skips with probability ``p``, so the
    decoder must also work from h alone. ``mode`` "cells": the image is split into a
    ``grid`` x ``grid`` partition and each cell of each sample loses its skips with
    probability ``p``, at every resolution (the mask is resized by nearest neighbour),
    so the decoder must fill a cell from h and from the other cells' skips.

    With ``keep_input`` the first skip, ``conv_in``'s output, is never dropped: it is the
    only path that brings x_t's own pixels to the decoder, so an eps-predicting U-Net can
    still know the noise where the other skips are gone.

    Dropped skips are zero and the kept ones are not rescaled: at inference every skip
    is present at its own scale. A forward pre-hook on each up block, so the model stays
    a plain ``UNet2DModel``; ``draw`` sets the mask for the next forward, ``clear``
    turns it off.
    """

    def __init__(
        self, unet: Any, p: float, mode: str = "sample", grid: int = 4, keep_input: bool = False
    ) -> None:
        if mode not in ("sample", "cells"):
            raise ValueError(f"skip dropout mode {mode!r}: 'sample' or 'cells'")
        if grid < 1:
            raise ValueError(f"skip dropout grid {grid}: at least 1 cell per side")
        self.p, self.mode, self.grid = p, mode, grid
        self.keep: torch.Tensor | None = None
        last = len(unet.up_blocks) - 1
        for i, block in enumerate(unet.up_blocks):
            # the last up block reads (conv_in's output, the first down resnet's); its
            # resnets take them from the end, so conv_in's is the tuple's first
            spare = 1 if keep_input and i == last else 0
            block.register_forward_pre_hook(functools.partial(self._hook, spare))

    def draw(self, batch: int, gen: torch.Generator) -> torch.Tensor:
        cells = 1 if self.mode == "sample" else self.grid
        self.keep = (torch.rand(batch, 1, cells, cells, generator=gen) >= self.p).float()
        return self.keep

    def clear(self) -> None:
        self.keep = None

    def _hook(self, spare: int, _block: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if self.keep is None:
            return None
        sample, skips, *rest = args
        dropped = tuple(
            s * torch.nn.functional.interpolate(self.keep, size=s.shape[-2:], mode="nearest").to(s)
            for s in skips[spare:]
        )
        return (sample, (*skips[:spare], *dropped), *rest)


def add_common_arguments(
    p: argparse.ArgumentParser, out: str, work_dir: str, cut_skips: int = 0
) -> None:
    p.add_argument("--out", default=out)
    p.add_argument("--work-dir", default=work_dir)
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument(
        "--minutes",
        type=float,
        default=float("inf"),
        help="minutes of training in this run (a resumed run trains this long again)",
    )
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--offset-noise", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--cut-skips", type=int, default=cut_skips, help="deepest up blocks without skips"
    )
    p.add_argument(
        "--skip-dropout",
        type=float,
        default=0.0,
        help="probability that a sample (or a cell, --skip-dropout-mode cells) loses its skips",
    )
    p.add_argument("--skip-dropout-mode", choices=("sample", "cells"), default="sample")
    p.add_argument(
        "--skip-dropout-grid",
        type=int,
        default=4,
        help="cells per side with --skip-dropout-mode cells",
    )
    p.add_argument(
        "--skip-dropout-keep-input",
        action="store_true",
        help="never drop conv_in's skip (x_t's own pixels), only the others",
    )
    p.add_argument(
        "--prediction",
        choices=PREDICTION_TYPES,
        default="epsilon",
        help="what the model predicts (the scheduler's prediction_type): the noise, x0 "
        "('sample') or v; the loss is the MSE to it",
    )


def twin_h_distance(h: torch.Tensor) -> torch.Tensor:
    """Mean over twin pairs of ||h_a - h_b||^2 / ((||h_a||^2 + ||h_b||^2) / 2), the batch
    being ``[A; B]``; the denominator carries no gradient, so the loss pulls twins'
    h together and gives no reason to grow or shrink h."""
    a, b = h.float().flatten(1).chunk(2)
    scale = 0.5 * (a.pow(2).sum(1) + b.pow(2).sum(1)).detach() + 1e-8
    return ((a - b).pow(2).sum(1) / scale).mean()


def train_noise_model(
    args: argparse.Namespace,
    model: torch.nn.Module,
    batch_fn: BatchFn,
    h_invariance: float = 0.0,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train (or resume) ``model``; the EMA copy and the run's figures.

    With ``args.cut_skips`` the skips of that many deepest up blocks are cut (before the
    first step, and again after every optimiser step).

    With ``h_invariance`` > 0 the batch is ``[A; B]``, B[i] a twin of A[i] (same content,
    another style; ``batch_fn`` draws them), each pair noised with the same t and noise,
    and ``h_invariance * twin_h_distance(h)`` is added to the loss: an h that the style
    does not move, so the look can only reach the decoder through the skips.

    With ``args.skip_dropout`` > 0 a ``SkipDropout`` mask is drawn for every batch (on
    the trained model only; the EMA and the export carry no hook).
    """
    if args.cut_skips:
        cut_skips(model, args.cut_skips)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    ckpt_path = work / "checkpoint.pt"
    ema = copy.deepcopy(model).requires_grad_(False)
    skip_p, skip_mode = args.skip_dropout, args.skip_dropout_mode
    prediction = args.prediction
    if prediction not in PREDICTION_TYPES:
        raise ValueError(f"prediction {prediction!r}: one of {', '.join(PREDICTION_TYPES)}")
    keep_input = skip_p > 0 and args.skip_dropout_keep_input
    dropout = (  # not on the EMA
        SkipDropout(model, skip_p, skip_mode, grid=args.skip_dropout_grid, keep_input=keep_input)
        if skip_p > 0
        else None
    )
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    step, seconds = 0, 0.0
    if ckpt_path.exists():
        # our own checkpoint, written by this script on this machine
        state = torch.load(ckpt_path, weights_only=True)
        model.load_state_dict(state["unet"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        step, seconds = int(state["step"]), float(state["seconds"])
        print(f"resumed at step {step} ({seconds / 60:.1f} min trained)")
    ab = DDPMScheduler(beta_schedule="linear").alphas_cumprod
    gen = torch.Generator().manual_seed(args.seed + step)
    deadline = time.monotonic() + args.minutes * 60
    bar = tqdm(initial=step, total=args.steps, desc="train", unit="step")
    losses: list[float] = []
    twin_losses: list[float] = []
    captured: list[torch.Tensor] = []
    if h_invariance > 0:
        mid = model.get_submodule("mid_block")
        mid.register_forward_hook(lambda _m, _i, out: captured.append(out))

    def save() -> None:
        state = {"unet": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict()}
        torch.save({**state, "step": step, "seconds": seconds}, ckpt_path)

    while step < args.steps and time.monotonic() < deadline:
        start = time.monotonic()
        x0, extra = batch_fn(step, gen)
        drawn = x0.shape[0] // 2 if h_invariance > 0 else x0.shape[0]
        t = torch.randint(0, 1000, (drawn,), generator=gen)
        noise = torch.randn((drawn, *x0.shape[1:]), generator=gen)
        offset = torch.randn(drawn, x0.shape[1], 1, 1, generator=gen)
        noise = noise + args.offset_noise * offset
        if h_invariance > 0:  # a twin shares its partner's t and noise
            t, noise = t.repeat(2), noise.repeat(2, 1, 1, 1)
        a = ab[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        captured.clear()
        if dropout is not None:
            dropout.draw(x_t.shape[0], gen)
        target = prediction_target(prediction, x0, noise, a)
        loss = torch.nn.functional.mse_loss(model(x_t, t, **extra).sample, target)
        if h_invariance > 0:
            twin = twin_h_distance(captured[0])
            twin_losses.append(float(twin.detach()))
            loss = loss + h_invariance * twin
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / args.warmup)
        opt.step()
        if args.cut_skips:
            cut_skips(model, args.cut_skips)
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(p, 1 - decay)
        step += 1
        seconds += time.monotonic() - start
        losses.append(float(loss))
        bar.update(1)
        if step % 50 == 0:
            shown = {"loss": f"{np.mean(losses[-50:]):.4f}"}
            if twin_losses:
                shown["twin_h"] = f"{np.mean(twin_losses[-50:]):.4f}"
            bar.set_postfix(shown)
        if step % args.save_every == 0:
            save()
    bar.close()
    save()
    final = float(np.mean(losses[-200:])) if losses else None
    meta = {
        "steps": step,
        "train_minutes": round(seconds / 60, 1),
        "batch": args.batch,
        "lr": args.lr,
        "ema": args.ema,
        "offset_noise": args.offset_noise,
        "threads": args.threads,
        "final_loss_mean_last_200": None if final is None else round(final, 5),
        "parameters": sum(p.numel() for p in model.parameters()),
        "seed": args.seed,
        "prediction_type": prediction,
        "cut_skip_levels": args.cut_skips,
        "h_invariance": h_invariance,
        "skip_dropout": skip_p,
        "skip_dropout_mode": skip_mode if skip_p > 0 else None,
        "skip_dropout_keep_input": keep_input,
        "skip_dropout_grid": args.skip_dropout_grid
        if skip_mode == "cells" and skip_p > 0
        else None,
        "twin_h_distance_mean_last_200": (
            round(float(np.mean(twin_losses[-200:])), 5) if twin_losses else None
        ),
    }
    if final is not None and not math.isfinite(final):
        raise SystemExit("training diverged")
    return ema, meta
