"""A model's prior noise: offset noise for models trained with it, N(0, I) otherwise."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from worker.engine import ModelLoadError, ddim_sample, ddpm_invert, load_denoiser, timestep_grid
from worker.engine.noise import prior_noise, randn


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_zero_offset_is_plain_randn() -> None:
    cpu = torch.device("cpu")
    assert torch.equal(prior_noise((3, 3, 8, 8), _gen(1), cpu), randn((3, 3, 8, 8), _gen(1), cpu))


def test_offset_noise_has_the_trained_covariance() -> None:
    n, offset = 4000, 0.3
    x = prior_noise((n, 3, 8, 8), _gen(0), torch.device("cpu"), offset)
    # per (row, channel) mean: variance 1/64 from eps plus offset^2 from the shared draw
    means = x.mean(dim=(2, 3))
    assert float(means.var()) == pytest.approx(1 / 64 + offset**2, rel=0.06)
    # per pixel: 1 + offset^2; channels stay independent
    assert float(x.var()) == pytest.approx(1 + offset**2, rel=0.03)
    corr = torch.corrcoef(means.T)
    assert float(corr[0, 1].abs()) < 0.05


def test_offset_noise_per_row_generators_do_not_depend_on_the_batch() -> None:
    cpu = torch.device("cpu")
    batch = prior_noise((3, 3, 4, 4), [_gen(7), _gen(8), _gen(9)], cpu, 0.1)
    alone = prior_noise((1, 3, 4, 4), [_gen(8)], cpu, 0.1)
    assert torch.equal(batch[1:2], alone)


def _copy_with_training(src: Path, dst: Path, training: dict[str, object]) -> Path:
    shutil.copytree(src, dst)
    (dst / "training.json").write_text(json.dumps(training))
    return dst


def test_loader_takes_the_offset_from_the_training_record(pixel_dir: Path, tmp_path: Path) -> None:
    plain = load_denoiser(pixel_dir, device="cpu", dtype="float32")
    assert plain.noise_offset == 0.0
    folder = _copy_with_training(pixel_dir, tmp_path / "m", {"offset_noise": 0.1})
    dn = load_denoiser(folder, device="cpu", dtype="float32")
    assert dn.noise_offset == 0.1
    x = dn.noise((2000, *dn.sample_shape), _gen(0))
    assert float(x.mean(dim=(2, 3)).var()) == pytest.approx(0.01 + 1 / 256, rel=0.1)
    # the stochastic steps draw the same noise: an edit-friendly inversion stays exact
    x0 = torch.rand(2, *dn.sample_shape, generator=_gen(3)) * 2 - 1
    grid = timestep_grid(8, dn.num_train_timesteps)
    with torch.no_grad():
        maps = ddpm_invert(dn, x0, grid, generator=_gen(4))
        out = ddim_sample(dn, maps.x_T, grid, eta=maps.eta, noises=maps.zs)
    assert float((out - x0).abs().max()) < 1e-4


def test_loader_refuses_a_bad_offset(pixel_dir: Path, tmp_path: Path) -> None:
    folder = _copy_with_training(pixel_dir, tmp_path / "m", {"offset_noise": "big"})
    with pytest.raises(ModelLoadError, match="offset_noise"):
        load_denoiser(folder, device="cpu", dtype="float32")
