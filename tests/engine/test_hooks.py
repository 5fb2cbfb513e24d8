"""Named, removable hooks on h and on the skips."""

from __future__ import annotations

import pytest
import torch

from tests.engine.tiny_models import build_pixel_unet
from worker.engine import Denoiser, HookError
from worker.engine.hooks import count_module_hooks


def _x(seed: int, dn: Denoiser, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, *dn.sample_shape, generator=torch.Generator().manual_seed(seed))


def test_removed_hooks_leave_the_model_bit_identical_to_a_bare_unet(pixel: Denoiser) -> None:
    x = _x(0, pixel)
    bare = build_pixel_unet(seed=0).eval()
    with torch.no_grad():
        expected = bare(x, torch.full((2,), 600)).sample
    with (
        pixel.hooks.edit_h("plus", lambda h, t: h + 1.0),
        pixel.hooks.edit_skips("zero", 0, lambda res, t: tuple(torch.zeros_like(r) for r in res)),
    ):
        assert not torch.equal(pixel.eps(x, 600), expected)
    assert count_module_hooks(pixel.unet) == 0
    assert torch.equal(pixel.eps(x, 600), expected)


def test_hooks_removed_after_an_exception(pixel: Denoiser) -> None:
    def boom(h: torch.Tensor, t: int) -> torch.Tensor:
        raise RuntimeError("edit failed")

    with pytest.raises(RuntimeError, match="edit failed"), pixel.hooks.edit_h("boom", boom):
        pixel.eps(_x(1, pixel), 100)
    assert pixel.hooks.active == [] and count_module_hooks(pixel.unet) == 0


@pytest.mark.parametrize("where", ["after", "before"])
def test_replacing_h_changes_eps_and_identity_does_not(pixel: Denoiser, where: str) -> None:
    x = _x(2, pixel)
    plain = pixel.eps(x, 500)
    with pixel.hooks.edit_h("same", lambda h, t: h.clone(), where=where):  # type: ignore[arg-type]
        assert torch.equal(pixel.eps(x, 500), plain)
    with pixel.hooks.edit_h("scaled", lambda h, t: 1.5 * h, where=where):  # type: ignore[arg-type]
        edited = pixel.eps(x, 500)
    assert (edited - plain).abs().max() > 1e-3


def test_h_hook_on_text_model(cond: Denoiser) -> None:
    z = _x(3, cond)
    c = cond.conditioning(["a red circle", "a small blue square"], 3.0)
    plain = cond.eps(z, 500, c)
    with cond.hooks.capture_h("cap") as cap:
        cond.eps(z, 500, c)
    assert cap.at(500).shape == (4, *cond.h_shape)
    with cond.hooks.edit_h("zero", lambda h, t: torch.zeros_like(h)):
        assert (cond.eps(z, 500, c) - plain).abs().max() > 1e-3
    assert count_module_hooks(cond.unet) == 0


def test_hook_sees_the_current_timestep(pixel: Denoiser) -> None:
    seen: list[int] = []

    def record(h: torch.Tensor, t: int) -> None:
        seen.append(t)

    with pixel.hooks.edit_h("clock", record):
        pixel.eps(_x(4, pixel), 321)
        pixel.up(pixel.down_mid(_x(4, pixel), 123))
    assert seen == [321, 123]


def test_skip_capture_and_replace(pixel: Denoiser) -> None:
    x = _x(5, pixel)
    plain = pixel.eps(x, 400)
    with pixel.hooks.capture_skips("cap", 1) as cap:
        pixel.eps(x, 400)
    # down block 1 (the last, no downsampler) hands 1 resnet output of 32 channels at 8x8
    assert cap.at(400).shape == (2, 32, 8, 8)
    with pixel.hooks.edit_skips("conv_in", -1, lambda res, t: (res[0] * 0,)):
        assert (pixel.eps(x, 400) - plain).abs().max() > 1e-3
    assert torch.equal(pixel.eps(x, 400), plain)


def test_duplicate_name_and_wrong_shape_are_refused(pixel: Denoiser) -> None:
    with pixel.hooks.edit_h("one", lambda h, t: None):
        with (
            pytest.raises(HookError, match="already attached"),
            pixel.hooks.edit_h("one", lambda h, t: None),
        ):
            pass
        assert pixel.hooks.active == ["one"]
    with (
        pytest.raises(HookError, match="returned shape"),
        pixel.hooks.edit_h("bad", lambda h, t: h[:, :1]),
    ):
        pixel.eps(_x(6, pixel), 10)
    with (
        pytest.raises(HookError, match="block: expected"),
        pixel.hooks.edit_skips("x", 7, lambda r, t: None),
    ):
        pass
    assert count_module_hooks(pixel.unet) == 0


def test_an_inner_scope_sees_none_of_the_outer_hooks_and_leaves_them_as_they_were(
    pixel: Denoiser,
) -> None:
    """What a fit that yields to edits relies on: the edits run inside the fit's step."""
    x = _x(7, pixel)
    plain = pixel.eps(x, 300)
    with (
        pixel.hooks.scope(),
        pixel.hooks.capture_h("fit.capture") as fit_cap,
        pixel.hooks.edit_h("fit.plus", lambda h, t: h + 1.0),
    ):
        outer = pixel.eps(x, 300)
        assert not torch.equal(outer, plain) and len(fit_cap.records) == 1
        with pixel.hooks.scope():  # an edit batch inside the fit
            assert torch.equal(pixel.eps(x, 300), plain)  # no outer hook fired
            with pixel.hooks.capture_h("fit.capture") as edit_cap:  # the same name is free
                pixel.eps(x, 200)
            pixel.hooks.edit_h("left.open", lambda h, t: h * 0).__enter__()
            assert len(edit_cap.records) == 1 and len(fit_cap.records) == 1
        # the inner scope's hooks went with it, even one left open
        assert pixel.hooks.active == ["fit.capture", "fit.plus"]
        assert torch.equal(pixel.eps(x, 300), outer) and len(fit_cap.records) == 2
    assert pixel.hooks.active == [] and count_module_hooks(pixel.unet) == 0
    assert torch.equal(pixel.eps(x, 300), plain)
