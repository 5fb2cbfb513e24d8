"""The style-invariance term of the DDPM recipe: style twins and the twins' h distance."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from diffusers import UNet2DModel

from worker.training.aligned import BACKGROUNDS, COLOURS, style_twins
from worker.training.loop import add_common_arguments, train_noise_model, twin_h_distance
from worker.training.train_ddpm import twin_batch


def _colours(image: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...], np.ndarray]:
    """(background, object colour, object mask) of a generator image."""
    bg = image[0, 0].astype(int)
    mask = np.abs(image.astype(int) - bg).sum(-1) > 60
    fg = image[mask].astype(int).mean(0) if mask.any() else bg
    return tuple(bg), tuple(np.rint(fg).astype(int)), mask


def _nearest(colour: tuple[int, ...], table: dict[str, tuple[int, int, int]]) -> str:
    return min(
        table, key=lambda k: sum((a - b) ** 2 for a, b in zip(colour, table[k], strict=True))
    )


def test_style_twins_share_their_content_and_differ_in_style() -> None:
    a, b = style_twins(seed=5, pairs=48)
    assert a.shape == b.shape == (48, 32, 32, 3)
    changed = {"colour": 0, "background": 0}
    for x, y in zip(a, b, strict=True):
        bg_x, fg_x, mask_x = _colours(x)
        bg_y, fg_y, mask_y = _colours(y)
        # same shape, size, aspect and jitter: the object covers nearly the same pixels
        # (anti-aliased edge pixels against another background may cross the threshold)
        assert (mask_x != mask_y).sum() <= 0.1 * max(mask_x.sum(), 1)
        colour = _nearest(fg_x, COLOURS) != _nearest(fg_y, COLOURS)
        background = _nearest(bg_x, BACKGROUNDS) != _nearest(bg_y, BACKGROUNDS)
        assert colour or background
        changed["colour"] += colour
        changed["background"] += background
    assert min(changed.values()) >= 16  # each style factor changes in a fair share
    a2, b2 = style_twins(seed=5, pairs=48)
    assert np.array_equal(a, a2) and np.array_equal(b, b2)


def test_twin_h_distance_is_relative_and_pulls_only_the_twins_together() -> None:
    torch.manual_seed(0)
    a = torch.randn(4, 8, 2, 2)
    assert float(twin_h_distance(torch.cat([a, a]))) == 0.0
    b = torch.randn(4, 8, 2, 2)
    d = twin_h_distance(torch.cat([a, b]))
    # scale-free: float32 sums of 32 products, scaled by 9 in both numerator and denominator
    assert torch.isclose(twin_h_distance(torch.cat([3 * a, 3 * b])), d, rtol=1e-5)
    h = torch.cat([a, b]).requires_grad_(True)
    twin_h_distance(h).backward()  # type: ignore[no-untyped-call]
    assert h.grad is not None
    # the gradient moves each twin toward the other (it has no component that grows h)
    step = -h.grad
    assert torch.all((step[:4] * (b - a)).flatten(1).sum(1) > 0)
    assert torch.all((step[4:] * (a - b)).flatten(1).sum(1) > 0)


def _tiny_unet() -> UNet2DModel:
    return UNet2DModel(
        sample_size=32, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
    )  # fmt: skip


def test_training_with_the_term_reports_it_and_pairs_share_t_and_noise(tmp_path: Path) -> None:
    p = argparse.ArgumentParser()
    add_common_arguments(p, out=str(tmp_path), work_dir=str(tmp_path))
    args = p.parse_args(["--steps", "3", "--batch", "4", "--threads", "1", "--warmup", "1"])
    unet = _tiny_unet()
    seen: list[torch.Tensor] = []
    unet.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0].detach().clone()))

    def batch(step: int, _gen: torch.Generator) -> tuple[torch.Tensor, dict[str, object]]:
        return twin_batch(0, step, 4), {}

    _, meta = train_noise_model(args, unet, batch, h_invariance=0.5)
    assert meta["steps"] == 3 and meta["h_invariance"] == 0.5
    assert isinstance(meta["twin_h_distance_mean_last_200"], float)
    x0 = twin_batch(0, 0, 4)
    x_t = seen[0]
    # twins differ only where their images differ: the noise and t are the pair's own
    diff_x0 = (x0[:2] - x0[2:]).abs().sum(1) > 0
    diff_xt = (x_t[:2] - x_t[2:]).abs().sum(1) > 1e-6
    assert torch.equal(diff_xt, diff_x0)
