"""Train the shipped attribute classifier on the shapes generator.

Fresh generator images every step; light corruptions (Gaussian noise, blur,
colour jitter) so it also reads the imperfect images a small diffusion model makes.
Reports per-factor accuracy on fresh, held-out generator images.

With ``--invalid`` the classifier gets one more head, ``valid`` (invalid, valid),
trained on a share of broken images mixed into every batch: blank and flat
fields, saturated images, heavy or pure noise, half-drawn images (half of the
picture replaced by a flat field or by noise) and cross-faded pairs. A judge can
then say "this is not a valid image" instead of naming the nearest factors of a
blank output with high confidence; the factor heads are not trained on those rows.

With ``--grain LIMIT`` as well (version 4), the valid head also reads the corrupted
valid rows: a row whose grain (``worker.engine.classifier.grain``) is above 1.25 x LIMIT
is invalid, one below 0.75 x LIMIT valid, one between is left out of the valid head's
loss; half the rows get light noise only (sd up to 0.012), so both sides are drawn.
The factor heads still learn every corrupted row: they read a grainy image's factors,
the valid head says it is not a clean one.

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

from worker.engine.classifier import AttributeClassifier, grain
from worker.engine.images import from_uint8
from worker.training.domains import domain

HELD_OUT_SEED = 2_000_000_000  # far from every training seed


VALIDITY = ("invalid", "valid")


def batch(seed: int, count: int, domain_name: str = "aligned") -> tuple[torch.Tensor, torch.Tensor]:
    gen = domain(domain_name)
    images, labels = gen.generate(seed, count)
    x = from_uint8(images)
    return x, torch.from_numpy(gen.label_array(labels))


def invalid_images(valid: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Broken images made from a batch of valid ones (same shape, in [-1, 1]).

    Kinds, one per row in turn: a flat field of any colour; saturation (every channel
    pushed to +-1); heavy noise on the image (std 0.5-1.5); pure noise; half-drawn (a
    random half replaced by a flat field); a 50/50 cross-fade of two images.
    """
    b, c, hgt, wid = valid.shape
    out = valid.clone()
    flat = torch.rand(b, c, 1, 1, generator=gen) * 2 - 1
    for i in range(b):
        kind = i % 6
        if kind == 0:
            out[i] = flat[i].expand(c, hgt, wid)
        elif kind == 1:
            out[i] = torch.sign(valid[i] + 0.3 * torch.randn(c, hgt, wid, generator=gen))
        elif kind == 2:
            std = 0.5 + float(torch.rand((), generator=gen))
            out[i] = valid[i] + std * torch.randn(c, hgt, wid, generator=gen)
        elif kind == 3:
            out[i] = torch.randn(c, hgt, wid, generator=gen) * 0.8
        elif kind == 4:
            half = int(torch.randint(0, 4, (), generator=gen))
            region = [slice(None)] * 3
            region[1 + half // 2] = slice(0, hgt // 2) if half % 2 == 0 else slice(hgt // 2, None)
            out[i][tuple(region)] = flat[i].view(c, 1, 1)
        else:
            out[i] = 0.5 * valid[i] + 0.5 * valid[(i + 1) % b].flip(-1)
    return out.clamp(-1.2, 1.2)


def corrupt(x: torch.Tensor, gen: torch.Generator, light_share: float = 0.0) -> torch.Tensor:
    """Gaussian noise of sd up to 0.15 (up to 0.012 on a ``light_share`` of the rows), a
    3x3 blur on 30% of them, a small colour shift."""
    b = x.shape[0]
    top = torch.full((b,), 0.15)
    if light_share:  # drawn only then, so that version 3's recipe draws what it drew
        top[torch.rand(b, generator=gen) < light_share] = 0.012
    noise_level = torch.rand(b, 1, 1, 1, generator=gen) * top.view(b, 1, 1, 1)
    x = x + noise_level * torch.randn(x.shape, generator=gen)
    blur = torch.rand(b, generator=gen) < 0.3
    if blur.any():
        kernel = torch.tensor([1.0, 2.0, 1.0])
        k2 = (kernel[:, None] * kernel[None, :] / 16).expand(3, 1, 3, 3)
        x[blur] = F.conv2d(F.pad(x[blur], (1, 1, 1, 1), mode="replicate"), k2, groups=3)
    x = x + (torch.rand(b, 3, 1, 1, generator=gen) - 0.5) * 0.1
    return x.clamp(-1.2, 1.2)


def grain_validity(x: torch.Tensor, limit: float) -> torch.Tensor:
    """The valid head's labels of corrupted valid rows by their own grain: 1 (valid) below
    0.75 x ``limit``, 0 (invalid) above 1.25 x ``limit``, -100 (left out of the loss)
    between."""
    g = grain(x)
    labels = (g < 0.75 * limit).long()
    labels[(g >= 0.75 * limit) & (g <= 1.25 * limit)] = -100
    return labels


def evaluate(
    model: AttributeClassifier, count: int = 2048, domain_name: str = "aligned"
) -> dict[str, float]:
    x, y = batch(HELD_OUT_SEED, count, domain_name)
    pred = model.predict(x)
    factors = domain(domain_name).FACTORS
    accuracy = {
        name: float((pred[name][0] == y[:, i]).float().mean()) for i, name in enumerate(factors)
    }
    if "valid" in pred:
        gen = torch.Generator().manual_seed(HELD_OUT_SEED)
        broken = invalid_images(x[:600], gen)
        bad = model.predict(broken)["valid"]
        accuracy["valid_on_valid"] = float((pred["valid"][0] == 1).float().mean())
        accuracy["invalid_on_invalid"] = float((bad[0] == 0).float().mean())
        # Gaussian noise over the images: sd 1.3/255 gives grain about 1.1, 3.8/255 about
        # 2.9, 10/255 about 7 (GRAIN_LIMIT is 2.0)
        for sd in (0.01, 0.03, 0.08):
            noisy = x[:600] + sd * torch.randn(x[:600].shape, generator=gen)
            read = model.predict(noisy)["valid"][0]
            accuracy[f"valid_with_noise_sd_{sd}"] = float((read == 1).float().mean())
    return accuracy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="models/shapes32-classifier")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--domain", default="aligned", help="the generator (one: aligned)")
    p.add_argument(
        "--invalid", type=float, default=0.0, help="share of each batch made of broken images"
    )
    p.add_argument(
        "--grain", type=float, default=0.0,
        help="with --invalid: the valid head also reads grain above this limit as invalid",
    )  # fmt: skip
    args = p.parse_args()
    factors = domain(args.domain).FACTORS
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    heads = {k: list(v) for k, v in factors.items()}
    if args.invalid:
        heads["valid"] = list(VALIDITY)
    model = AttributeClassifier(heads)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps)
    start = time.monotonic()
    bar = tqdm(range(args.steps), desc="classifier", unit="step")
    losses: list[float] = []
    for step in bar:
        x, y = batch(1_000_000 + args.seed * 100_000 + step, args.batch, args.domain)
        x = corrupt(x, gen, light_share=0.5 if args.grain else 0.0)
        n_bad = round(args.invalid * args.batch)
        if n_bad:
            x = torch.cat([x, invalid_images(x[:n_bad], gen)])
        logits = model(x)
        good = slice(0, args.batch)
        loss = sum(
            F.cross_entropy(logits[n][good], y[:, i]) for i, n in enumerate(factors)
        ) + torch.zeros(())
        if n_bad:
            validity = torch.cat([torch.ones(args.batch), torch.zeros(n_bad)]).long()
            if args.grain:
                validity[good] = grain_validity(x[good], args.grain)
            loss = loss + F.cross_entropy(logits["valid"], validity, ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        sched.step()
        losses.append(float(loss))
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    model.eval()
    accuracy = evaluate(model, domain_name=args.domain)
    model.save(Path(args.out))
    meta = {
        "steps": args.steps,
        "batch": args.batch,
        "train_minutes": round((time.monotonic() - start) / 60, 1),
        "held_out_accuracy": {k: round(v, 4) for k, v in accuracy.items()},
        "parameters": sum(p.numel() for p in model.parameters()),
        "domain": args.domain,
        "invalid_share": args.invalid,
        "grain_limit": args.grain,
    }
    (Path(args.out) / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
