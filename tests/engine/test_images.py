from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from worker.engine import InputError
from worker.engine.images import fit_image, psnr, to_pil, to_tensor


def _image(w: int, h: int) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_uint8_round_trip_is_exact() -> None:
    image = _image(8, 6)
    back = to_pil(to_tensor([image]))[0]
    assert np.array_equal(np.asarray(back), np.asarray(image))


def test_tensor_range_and_shape() -> None:
    x = to_tensor([_image(8, 6), _image(8, 6)])
    assert x.shape == (2, 3, 6, 8) and x.min() >= -1 and x.max() <= 1


@pytest.mark.parametrize("fit", ["resize", "crop"])
def test_fit_modes_reach_the_model_size(fit: str) -> None:
    assert fit_image(_image(40, 20), (16, 16), fit).size == (16, 16)  # type: ignore[arg-type]


def test_fit_error_names_the_expected_size() -> None:
    with pytest.raises(InputError, match="takes 16x16 images, got 40x20"):
        fit_image(_image(40, 20), (16, 16), "error")


def test_psnr_of_known_error() -> None:
    a = torch.zeros(1, 3, 4, 4)
    # mse 0.04 on a peak-to-peak range of 2: 10 log10(4 / 0.04) = 20 dB
    assert psnr(a, a + 0.2)[0] == pytest.approx(20.0, abs=1e-4)
    assert psnr(a, a)[0] == float("inf")
