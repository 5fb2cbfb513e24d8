"""The adapter over both families: shapes, bit-identity with bare diffusers, dtypes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.engine.tiny_models import build_cond_unet, build_pixel_unet
from worker.engine import Conditioning, Denoiser, InputError, load_denoiser


def test_pixel_shapes(pixel: Denoiser) -> None:
    assert pixel.family == "pixel" and not pixel.conditional
    assert pixel.sample_shape == (3, 16, 16) == pixel.image_shape
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    eps = pixel.eps(x, 999)
    assert eps.shape == (2, 3, 16, 16) and eps.dtype == torch.float32
    state = pixel.down_mid(x, 999)
    assert tuple(state.h.shape[1:]) == pixel.h_shape == (32, 8, 8)


def test_latent_shapes(cond: Denoiser) -> None:
    assert cond.family == "latent" and cond.conditional
    assert cond.sample_shape == (4, 8, 8) and cond.image_shape == (3, 16, 16)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    z = cond.encode(images)
    assert z.shape == (2, 4, 8, 8)
    assert cond.decode(z).shape == (2, 3, 16, 16)
    c = cond.conditioning(["a red circle", "a blue square"], guidance_scale=4.0)
    assert c.embeddings.shape == (2, 16, 32) and c.uncond is not None
    assert cond.eps(z, 500, c).shape == (2, 4, 8, 8)
    assert tuple(cond.down_mid(z, 500, c).h.shape) == (4, *cond.h_shape)  # CFG doubles the batch


def test_pixel_eps_is_bit_identical_to_bare_diffusers(pixel: Denoiser) -> None:
    bare = build_pixel_unet(seed=0).eval()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    t = torch.full((3,), 420, dtype=torch.long)
    with torch.no_grad():
        expected = bare(x, t).sample
        got = pixel.eps(x, 420)
    assert torch.equal(got, expected)


def test_cond_eps_is_bit_identical_to_bare_diffusers(cond: Denoiser) -> None:
    bare = build_cond_unet(seed=0).eval()
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    c = cond.conditioning(["a red circle", "a big green triangle"])
    t = torch.full((2,), 300, dtype=torch.long)
    with torch.no_grad():
        expected = bare(z, t, encoder_hidden_states=c.embeddings).sample
        got = cond.eps(z, 300, c)
    assert torch.equal(got, expected)


def test_guidance_combines_uncond_and_cond(cond: Denoiser) -> None:
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    emb = cond.encode_prompt(["a red circle"])
    unc = cond.encode_prompt([""])
    e_c = cond.eps(z, 200, Conditioning(emb))
    e_u = cond.eps(z, 200, Conditioning(unc))
    guided = cond.eps(z, 200, Conditioning(emb, unc, guidance_scale=7.5))
    torch.testing.assert_close(guided, e_u + 7.5 * (e_c - e_u), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fixture", ["pixel", "cond"])
def test_split_forward_is_bit_identical(fixture: str, request: pytest.FixtureRequest) -> None:
    dn: Denoiser = request.getfixturevalue(fixture)
    x = torch.randn(2, *dn.sample_shape, generator=torch.Generator().manual_seed(4))
    c = dn.conditioning(["a red circle", "a blue square"], 3.0) if dn.conditional else None
    with torch.no_grad():
        assert torch.equal(dn.up(dn.down_mid(x, 640, c)), dn.eps(x, 640, c))


def test_v_prediction_is_converted_to_eps(pixel_dir: Path, tmp_path: Path) -> None:
    """A v-prediction model's output v gives eps = sqrt(ab) v + sqrt(1 - ab) x_t."""
    dn = load_denoiser(pixel_dir, device="cpu", dtype="float32")
    v_model = Denoiser(name="v", unet=dn.unet, schedule=dn.schedule, prediction_type="v_prediction")
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    ab = dn.schedule.ab(700)
    raw = dn.eps(x, 700)  # the raw network output, read as v
    torch.testing.assert_close(v_model.eps(x, 700), ab**0.5 * raw + (1 - ab) ** 0.5 * x)


def test_batch_equals_single_runs(pixel: Denoiser) -> None:
    """Tolerance 1e-5: batched convolutions may pick other kernels than batch 1."""
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    batched = pixel.eps(x, 250)
    singles = torch.cat([pixel.eps(x[i : i + 1], 250) for i in range(4)])
    torch.testing.assert_close(batched, singles, rtol=1e-5, atol=1e-5)


def test_bf16_close_to_fp32(pixel_dir: Path, pixel: Denoiser) -> None:
    """bf16 keeps 8 mantissa bits: we accept 5% relative L2 error on eps."""
    bf16 = load_denoiser(pixel_dir, device="cpu", dtype="bfloat16")
    assert bf16.dtype == torch.bfloat16
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    ref, low = pixel.eps(x, 500), bf16.eps(x, 500)
    assert low.dtype == torch.float32  # cast back before scheduler arithmetic
    rel = (low - ref).norm() / ref.norm()
    assert rel < 0.05, f"bf16 relative error {rel:.4f}"


class TestBadInput:
    def test_wrong_channels(self, pixel: Denoiser) -> None:
        with pytest.raises(InputError, match=r"x_t: expected shape \(B, 3, 16, 16\)"):
            pixel.eps(torch.zeros(1, 4, 16, 16), 10)

    def test_wrong_size_image(self, pixel: Denoiser) -> None:
        with pytest.raises(InputError, match="3-channel 16x16 images"):
            pixel.encode(torch.zeros(1, 3, 32, 32))

    def test_timestep_out_of_range(self, pixel: Denoiser) -> None:
        with pytest.raises(InputError, match=r"t: expected 0\.\.999"):
            pixel.eps(torch.zeros(1, 3, 16, 16), 1000)

    def test_prompt_for_unconditional_model(self, pixel: Denoiser) -> None:
        with pytest.raises(InputError, match="unconditional"):
            pixel.encode_prompt(["a red circle"])

    def test_conditional_model_without_prompt(self, cond: Denoiser) -> None:
        with pytest.raises(InputError, match="text-conditioned"):
            cond.eps(torch.zeros(1, 4, 8, 8), 10)

    def test_guidance_without_uncond(self, cond: Denoiser) -> None:
        c = Conditioning(cond.encode_prompt(["a"]), None, guidance_scale=5.0)
        with pytest.raises(InputError, match="unconditional embeddings"):
            cond.eps(torch.zeros(1, 4, 8, 8), 10, c)

    def test_bad_prediction_type(self, pixel: Denoiser) -> None:
        with pytest.raises(InputError, match="prediction_type"):
            Denoiser(name="x", unet=pixel.unet, schedule=pixel.schedule, prediction_type="flow")
