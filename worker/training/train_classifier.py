"""Train the shipped attribute classifier on the shapes generator.

Fresh generator images every step; light corruptions (Gaussian noise, blur,
colour jitter) so it also reads the imperfect images a small diffusion model makes.
Reports per-factor accuracy on fresh, held-out generator images.

    python -m worker.training.train_classifier --out models/shapes32-classifier
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from worker.engine.classifier import AttributeClassifier
from worker.training.shapes import FACTORS, generate, label_array

HELD_OUT_SEED = 2_000_000_000  # far from every training seed


def batch(seed: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = generate(seed, count)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x, torch.from_numpy(label_array(labels))


def corrupt(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    b = x.shape[0]
    noise_level = torch.rand(b, 1, 1, 1, generator=gen) * 0.15
    x = x + noise_level * torch.randn(x.shape, generator=gen)
    blur = torch.rand(b, generator=gen) < 0.3
    if blur.any():
        kernel = torch.tensor([1.0, 2.0, 1.0])
        k2 = (kernel[:, None] * kernel[None, :] / 16).expand(3, 1, 3, 3)
        x[blur] = F.conv2d(F.pad(x[blur], (1, 1, 1, 1), mode="replicate"), k2, groups=3)
    x = x + (torch.rand(b, 3, 1, 1, generator=gen) - 0.5) * 0.1
    return x.clamp(-1.2, 1.2)


def evaluate(model: AttributeClassifier, count: int = 2048) -> dict[str, float]:
    x, y = batch(HELD_OUT_SEED, count)
    pred = model.predict(x)
    return {
        name: float((pred[name][0] == y[:, i]).float().mean()) for i, name in enumerate(FACTORS)
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="models/shapes32-classifier")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    model = AttributeClassifier({k: list(v) for k, v in FACTORS.items()})
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps)
    start = time.monotonic()
    bar = tqdm(range(args.steps), desc="classifier", unit="step")
    losses: list[float] = []
    for step in bar:
        x, y = batch(1_000_000 + args.seed * 100_000 + step, args.batch)
        logits = model(corrupt(x, gen))
        loss = sum(F.cross_entropy(logits[n], y[:, i]) for i, n in enumerate(FACTORS))
        assert isinstance(loss, torch.Tensor)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        sched.step()
        losses.append(float(loss))
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    model.eval()
    accuracy = evaluate(model)
    model.save(Path(args.out))
    meta = {
        "steps": args.steps,
        "batch": args.batch,
        "train_minutes": round((time.monotonic() - start) / 60, 1),
        "held_out_accuracy": {k: round(v, 4) for k, v in accuracy.items()},
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    (Path(args.out) / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
