"""Cutting the deepest skip connections makes h the decoder's only path at those levels."""

from __future__ import annotations

import dataclasses

import torch

from worker.engine import unet_split
from worker.training.loop import cut_skips
from worker.training.train_ddpm import build_unet


def _eps_with_skips_scaled(unet: torch.nn.Module, which: list[int]) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(0)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([500, 500])
    with torch.no_grad():
        state = unet_split.down_mid(unet, x, t, None)
        plain = unet_split.up(unet, state, None)
        skips = list(state.skips)
        for i in which:
            skips[i] = torch.randn_like(skips[i]) * 10
        moved = unet_split.up(unet, dataclasses.replace(state, skips=tuple(skips)), None)
        h_zero = unet_split.up(unet, state, torch.zeros_like(state.h))
    return plain, moved, h_zero


def test_cut_skips_are_not_read_and_h_is() -> None:
    torch.manual_seed(0)
    unet = build_unet().eval()
    # the last two skips feed the deepest up block (4x4), the two before it the 8x8 one;
    # the 8x8 block's second skip (64 channels) shares a GroupNorm group with the
    # hidden state, so only the first is exactly silent there
    plain, moved, _ = _eps_with_skips_scaled(unet, [-1, -2, -3])
    assert (moved - plain).abs().max() > 1e-3  # a plain U-Net reads them
    cut_skips(unet, 2)
    plain, moved, h_zero = _eps_with_skips_scaled(unet, [-1, -2, -3])
    assert torch.equal(moved, plain)
    _, moved_shallow, _ = _eps_with_skips_scaled(unet, [0])
    assert (moved_shallow - plain).abs().max() > 1e-3  # shallow skips still count
    assert (h_zero - plain).abs().max() > 1e-3
