"""The judge's grain measure (``worker.engine.classifier.grain``): noise laid over a
drawn object, which the evaluations report beside the classifier's reading."""

from __future__ import annotations

import numpy as np
import torch

from worker.engine.classifier import GRAIN_LIMIT, grain
from worker.engine.images import from_uint8
from worker.training import aligned


def _generator_images(count: int) -> torch.Tensor:
    images, _ = aligned.generate(7_400_000, count)
    return from_uint8(images)


def test_generator_images_are_not_grainy_and_noise_over_them_is() -> None:
    x = _generator_images(64)
    clean = grain(x)
    # flat areas equal their median; only anti-aliased edges differ (at most 0.56 of 255
    # measured over 256 other images), far below the limit
    assert clean.max() < GRAIN_LIMIT / 2
    # Gaussian noise of sd 8 (of 255) per pixel moves a pixel from its neighbourhood's
    # median by about 0.8 sd on average: ~6, three times the limit
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * (8 / 127.5)
    assert grain(x + noise).min() > GRAIN_LIMIT


def test_grain_is_the_mean_distance_from_the_three_by_three_median() -> None:
    x = torch.full((1, 3, 5, 5), -1.0)
    x[0, :, 2, 2] = 1.0  # one white pixel on black: the median ignores it
    expected = 3 * 255.0 / 75  # one pixel of 25 in each of 3 channels, off by 255
    assert np.isclose(float(grain(x)[0]), expected, rtol=1e-6)
