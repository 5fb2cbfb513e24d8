from __future__ import annotations

from pathlib import Path

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


def test_a_16_bit_grey_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 16 * 16).reshape(16, 16).astype(np.uint16)
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as im:
        im.load()
        assert im.mode.startswith("I")  # PIL opens it as 16-bit greyscale
        x = to_tensor([fit_image(im, (16, 16))])
    want = torch.from_numpy(np.rint(ramp / 257.0).astype(np.float32)) / 127.5 - 1.0
    torch.testing.assert_close(x[0, 0], want)  # PIL's convert alone: everything >= 255 white
    assert x.min() == -1.0 and x.max() == 1.0 and x[0, 0].median() < 0.1


def test_transparency_is_flattened_onto_white() -> None:
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255  # red everywhere, but only the left half is opaque
    rgba[:, :4, 3] = 255
    x = to_tensor([fit_image(Image.fromarray(rgba, "RGBA"), (8, 8))])
    assert torch.all(x[0, :, :, :4] == torch.tensor([1.0, -1.0, -1.0])[:, None, None])
    assert torch.all(x[0, :, :, 4:] == 1.0)  # transparent: white, not the hidden red


def test_a_jpeg_with_an_exif_rotation_is_turned_upright(tmp_path: Path) -> None:
    pixels = np.zeros((8, 16, 3), np.uint8)  # stored 16 wide, 8 high
    pixels[:, :8] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    path = tmp_path / "phone.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=100)
    with Image.open(path) as im:
        im.load()
        x = to_tensor([fit_image(im, (16, 8))])  # viewed: 8 wide, 16 high
    assert x.shape == (1, 3, 16, 8)
    assert x[0, :, :8].mean() > 0.9 and x[0, :, 8:].mean() < -0.9  # the white half on top
