"""Skip dropout (a training candidate of issue #15) zeroes exactly the skips it draws."""

from __future__ import annotations

import argparse
import copy

import pytest
import torch
from diffusers import UNet2DModel

from worker.training.loop import SkipDropout, add_common_arguments, train_noise_model
from worker.training.train_ddpm import batch_images, build_unet


def _zero_skip_eps(unet: UNet2DModel, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """eps with every skip the up blocks read set to zero, by a hook of this test's own."""

    def zero(_block: object, args: tuple[object, ...]) -> tuple[object, ...]:
        sample, skips, *rest = args
        return (sample, tuple(torch.zeros_like(s) for s in skips), *rest)  # type: ignore[attr-defined]

    handles = [b.register_forward_pre_hook(zero) for b in unet.up_blocks]
    try:
        out: torch.Tensor = unet(x, t).sample
        return out
    finally:
        for h in handles:
            h.remove()


def test_sample_mode_drops_all_skips_of_the_drawn_samples_only() -> None:
    torch.manual_seed(0)
    unet = build_unet().eval()
    x, t = torch.randn(6, 3, 32, 32), torch.full((6,), 400)
    with torch.no_grad():
        plain = unet(x, t).sample
        zeroed = _zero_skip_eps(unet, x, t)
        dropout = SkipDropout(unet, 0.5, "sample")
        gen = torch.Generator().manual_seed(0)
        keep = dropout.draw(6, gen).flatten().bool()
        while not 0 < int(keep.sum()) < 6:  # a draw with both kinds (p 1 - 2 / 64 each)
            keep = dropout.draw(6, gen).flatten().bool()
        dropped = unet(x, t).sample
        dropout.clear()
        cleared = unet(x, t).sample
    # a sample's eps depends on its own row only (GroupNorm is per sample), so each row
    # is the plain forward's or the all-skips-zero forward's, as computed elsewhere
    torch.testing.assert_close(dropped[keep], plain[keep], rtol=0, atol=1e-5)
    torch.testing.assert_close(dropped[~keep], zeroed[~keep], rtol=0, atol=1e-5)
    assert (zeroed - plain).abs().amax() > 1e-2  # the skips matter, so the test can fail
    torch.testing.assert_close(cleared, plain, rtol=0, atol=0)


def test_cells_mode_masks_each_skip_at_its_resolution() -> None:
    unet = build_unet().eval()
    seen: list[torch.Tensor] = []
    dropout = SkipDropout(unet, 0.5, "cells", grid=4)
    gen = torch.Generator().manual_seed(0)
    keep = dropout.draw(2, gen)
    while not 0 < int(keep.sum()) < keep.numel():
        keep = dropout.draw(2, gen)
    for block in unet.up_blocks:  # registered after SkipDropout's hook: sees its output
        block.register_forward_pre_hook(lambda _b, a: seen.extend(a[1]))
    with torch.no_grad():
        unet(torch.randn(2, 3, 32, 32), torch.full((2,), 400))
    assert {s.shape[-1] for s in seen} == {4, 8, 16, 32}
    for s in seen:
        px = s.shape[-1] // 4  # one grid cell, in this skip's pixels (1 at 4x4)
        cell = keep.repeat_interleave(px, -1).repeat_interleave(px, -2).bool().expand_as(s)
        assert torch.all(s[~cell] == 0)
        assert torch.all(s[cell] != 0)  # kept cells carry their features unscaled


def test_keep_input_spares_conv_in_output_and_drops_every_other_skip() -> None:
    unet = build_unet().eval()
    conv_in: list[torch.Tensor] = []
    unet.conv_in.register_forward_hook(lambda _m, _a, out: conv_in.append(out))
    dropout = SkipDropout(unet, 1.0, "sample", keep_input=True)  # p 1: every sample drops
    dropout.draw(2, torch.Generator().manual_seed(0))
    seen: list[torch.Tensor] = []
    for block in unet.up_blocks:  # registered after SkipDropout's hook: sees its output
        block.register_forward_pre_hook(lambda _b, a: seen.extend(a[1]))
    with torch.no_grad():
        unet(torch.randn(2, 3, 32, 32), torch.full((2,), 400))
    kept = [s for s in seen if bool(s.abs().amax() > 0)]
    assert len(seen) == 8 and len(kept) == 1  # 1 + 2 + 2 + 2 + 1 skips, one of them kept
    assert kept[0] is conv_in[0]  # the very tensor conv_in produced, unscaled


def test_training_with_skip_dropout_leaves_the_ema_plain(tmp_path: object) -> None:
    p = argparse.ArgumentParser()
    add_common_arguments(p, out=str(tmp_path), work_dir=str(tmp_path))
    args = p.parse_args(["--steps", "2", "--batch", "4", "--threads", "1", "--skip-dropout", "0.5"])
    unet = build_unet()
    ema, meta = train_noise_model(args, unet, lambda s, _g: (batch_images(0, s, 4), {}))
    assert meta["skip_dropout"] == 0.5 and meta["skip_dropout_mode"] == "sample"
    assert meta["skip_dropout_keep_input"] is False
    assert isinstance(ema, UNet2DModel)
    assert not ema.up_blocks[0]._forward_pre_hooks  # the exported weights carry no hook
    copy.deepcopy(ema)  # and can be exported


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="cells"):
        SkipDropout(build_unet(), 0.5, "pixels")
    with pytest.raises(ValueError, match="grid 0"):
        SkipDropout(build_unet(), 0.5, "cells", grid=0)


def test_the_cells_grid_is_the_command_line_s(tmp_path: object) -> None:
    p = argparse.ArgumentParser()
    add_common_arguments(p, out=str(tmp_path), work_dir=str(tmp_path))
    cells = ["--skip-dropout", "0.5", "--skip-dropout-mode", "cells", "--skip-dropout-grid", "8"]
    args = p.parse_args(["--steps", "1", "--batch", "2", "--threads", "1", *cells])
    masks: list[torch.Tensor] = []
    draw = SkipDropout.draw

    def spy(self: SkipDropout, batch: int, gen: torch.Generator) -> torch.Tensor:
        masks.append(draw(self, batch, gen))
        return masks[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SkipDropout, "draw", spy)
        _, meta = train_noise_model(args, build_unet(), lambda s, _g: (batch_images(0, s, 2), {}))
    assert meta["skip_dropout_grid"] == 8
    assert masks and masks[0].shape == (2, 1, 8, 8)
