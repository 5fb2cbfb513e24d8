"""Generator v3: one centred object; content and style factors drawn independently."""

from __future__ import annotations

import numpy as np
import torch

from worker.engine.images import from_uint8
from worker.training.aligned import (
    CONTENT_FACTORS,
    FACTORS,
    STYLE_FACTORS,
    generate,
    label_array,
    twins,
)
from worker.training.train_classifier import grain_validity, invalid_images


def test_deterministic_from_its_seed() -> None:
    a, la = generate(3, 16)
    b, lb = generate(3, 16)
    assert np.array_equal(a, b) and la == lb
    assert not np.array_equal(a, generate(4, 16)[0])
    assert a.shape == (16, 32, 32, 3) and a.dtype == np.uint8


def test_factors_are_independent_and_every_value_appears() -> None:
    _, labels = generate(0, 2000)
    arr = label_array(labels)
    for column, values in enumerate(FACTORS.values()):
        counts = np.bincount(arr[:, column], minlength=len(values))
        assert counts.min() > 0.6 * len(arr) / len(values)
    assert set(CONTENT_FACTORS) | set(STYLE_FACTORS) == set(FACTORS)


def test_the_object_is_centred_within_the_jitter() -> None:
    images, labels = generate(1, 64)
    for image, lab in zip(images, labels, strict=True):
        bg = np.array(image[0, 0], float)
        mask = np.abs(image.astype(float) - bg).sum(-1) > 60  # the object's pixels
        ys, xs = np.nonzero(mask)
        assert abs(ys.mean() - 15.5) <= 3.5 and abs(xs.mean() - 15.5) <= 2.5, lab.caption()


def test_aspect_stretches_the_object_along_its_axis() -> None:
    images, labels = generate(2, 64)
    for image, lab in zip(images, labels, strict=True):
        bg = np.array(image[0, 0], float)
        ys, xs = np.nonzero(np.abs(image.astype(float) - bg).sum(-1) > 60)
        wide = np.ptp(xs) > np.ptp(ys)
        assert wide == (FACTORS["aspect"][lab.aspect] == "wide"), lab.caption()


def test_twins_differ_in_one_factor_only() -> None:
    a, b, la, lb = twins("colour", 8, seed=0)
    for x, y in zip(label_array(la), label_array(lb), strict=True):
        differ = [name for name, u, v in zip(FACTORS, x, y, strict=True) if u != v]
        assert differ == ["colour"]
    assert a.shape == b.shape == (8, 32, 32, 3)


def test_captions_name_the_factors() -> None:
    _, labels = generate(5, 1)
    caption = labels[0].caption()
    for name, values in FACTORS.items():
        assert values[getattr(labels[0], name)] in caption
    assert "position" not in caption and " at the " not in caption


def test_invalid_images_are_broken_in_each_way() -> None:
    images, _ = generate(6, 12)
    x = from_uint8(images)
    bad = invalid_images(x, torch.Generator().manual_seed(0))
    assert bad.shape == x.shape
    assert bad[0].flatten(1).std(1).max() == 0  # a flat field
    assert bool((bad[1].abs() == 1).all())  # saturated
    assert (bad[3] - x[3]).abs().mean() > 0.3  # noise


def test_grain_labels_clean_rows_valid_grainy_ones_invalid_and_leaves_the_band_out() -> None:
    images, _ = generate(7, 3)
    x = from_uint8(images)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    # grain of the clean images at most 0.56; noise of sd 2.6/255 about 2.0 (the band
    # 1.5-2.5 at limit 2), of sd 8/255 about 6
    rows = torch.cat([x, x + noise * (2.6 / 127.5), x + noise * (8 / 127.5)])
    assert grain_validity(rows, 2.0).tolist() == [1] * 3 + [-100] * 3 + [0] * 3
