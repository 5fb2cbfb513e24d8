"""``--prediction``: the loss's target is what the exported scheduler says the model
predicts, so the engine turns the target back into the very noise that was added."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from worker.engine import load_denoiser
from worker.engine.denoiser import PREDICTION_TYPES
from worker.training.loop import (
    add_common_arguments,
    prediction_target,
    train_noise_model,
)
from worker.training.train_ddpm import batch_images, build_unet, export


@pytest.mark.parametrize("prediction", PREDICTION_TYPES)
def test_the_engine_reads_the_trained_target_back_as_the_noise(
    prediction: str, tmp_path: Path
) -> None:
    p = argparse.ArgumentParser()
    add_common_arguments(p, out=str(tmp_path), work_dir=str(tmp_path / "work"))
    args = p.parse_args(["--steps", "1", "--batch", "2", "--threads", "1",
                         "--prediction", prediction])  # fmt: skip
    ema, meta = train_noise_model(args, build_unet(), lambda s, _g: (batch_images(0, s, 2), {}))
    assert meta["prediction_type"] == prediction
    export(ema, tmp_path / "out", meta)
    dn = load_denoiser(tmp_path / "out", name="p", device="cpu", dtype="float32")
    assert dn.prediction_type == prediction
    gen = torch.Generator().manual_seed(0)
    x0 = batch_images(1, 0, 3)
    noise = torch.randn(x0.shape, generator=gen)
    for t in (0, 10, 500, 999):
        ab = dn.schedule.alphas_cumprod[t].float()
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        target = prediction_target(prediction, x0, noise, ab)
        # float32 throughout: sample at t 0 divides by sqrt(1 - ab) = 0.01, which turns
        # x_t's rounding (|x_t| <= ~5, eps 6e-8 relative) into ~3e-5 of the noise
        torch.testing.assert_close(dn._to_eps(target, x_t, t, None), noise, rtol=0, atol=1e-3)


def test_an_unknown_prediction_is_refused() -> None:
    with pytest.raises(ValueError, match="epsilon"):
        prediction_target("x0", torch.zeros(1), torch.zeros(1), torch.ones(1))
