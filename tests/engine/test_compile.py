"""torch.compile'd U-Net calls: the same eps as eager, padded to buckets, eager where
they must be (hooks, gradients, oversized batches). Fresh denoisers: compiling mutates
nothing in the module, but the session fixtures stay eager for every other test."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from worker.boot import compile_buckets, compile_model
from worker.engine import Conditioning, Denoiser, load_denoiser
from worker.engine.errors import InputError


@pytest.fixture(scope="module")
def compiled(pixel_dir: Path) -> tuple[Denoiser, Denoiser]:
    eager = load_denoiser(pixel_dir, name="eager", device="cpu", dtype="float32")
    fast = load_denoiser(pixel_dir, name="compiled", device="cpu", dtype="float32")
    fast.enable_compile([4])  # one bucket: each compile costs ~20 s here
    fast.warm_compiled()
    return eager, fast


def test_compiled_calls_match_eager_and_pad_to_the_next_bucket(
    compiled: tuple[Denoiser, Denoiser],
) -> None:
    eager, fast = compiled
    assert fast.compiled_calls == 1  # the warm-up: one call per bucket
    x = torch.randn(3, *fast.sample_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for t in (999, 500, 3):
            want, got = eager.eps(x, t), fast.eps(x, t)
            assert got.shape == want.shape == x.shape  # 3 rows, run as a bucket of 4
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert fast.compiled_calls == 4
    assert eager.compiled_calls == 0


def test_a_row_does_not_depend_on_the_padding(compiled: tuple[Denoiser, Denoiser]) -> None:
    _, fast = compiled
    x = torch.randn(4, *fast.sample_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        alone = fast.eps(x[:1], 700)  # padded with three copies of itself
        together = fast.eps(x, 700)  # no padding
    torch.testing.assert_close(alone, together[:1], rtol=1e-4, atol=1e-4)


def test_hooks_gradients_and_big_batches_run_eagerly(compiled: tuple[Denoiser, Denoiser]) -> None:
    eager, fast = compiled
    x = torch.randn(2, *fast.sample_shape, generator=torch.Generator().manual_seed(2))
    before = fast.compiled_calls
    with torch.no_grad(), fast.hooks.capture_h("probe") as cap:
        fast.eps(x, 400)
    assert len(cap.tensors) == 1  # the hook fired: the eager module ran
    with torch.no_grad():
        fast.eps(torch.randn(5, *fast.sample_shape), 400)  # over the largest bucket
    xg = x.clone().requires_grad_(True)
    fast.eps(xg, 400).sum().backward()  # type: ignore[no-untyped-call]
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    assert fast.compiled_calls == before
    with torch.no_grad():  # and the compiled path is intact afterwards
        torch.testing.assert_close(fast.eps(x, 400), eager.eps(x, 400), rtol=1e-4, atol=1e-4)
    assert fast.compiled_calls == before + 1


def test_bucket_sizes_must_be_positive(pixel_dir: Path) -> None:
    dn = load_denoiser(pixel_dir, name="x", device="cpu", dtype="float32")
    with pytest.raises(InputError, match="compile"):
        dn.enable_compile([0, 4])


def test_the_worker_compiles_power_of_two_buckets_up_to_its_largest_call() -> None:
    assert compile_buckets(8, conditional=False) == [1, 2, 4, 8]
    assert compile_buckets(6, conditional=False) == [1, 2, 4, 6]
    assert compile_buckets(8, conditional=True) == [1, 2, 4, 8, 16]  # 2B rows under guidance
    assert compile_buckets(1, conditional=False) == [1]


def test_a_guided_text_model_pads_its_prompt_embeddings_too(cond_dir: Path) -> None:
    eager = load_denoiser(cond_dir, name="eager-cond", device="cpu", dtype="float32")
    fast = load_denoiser(cond_dir, name="compiled-cond", device="cpu", dtype="float32")
    # guided: 2 samples -> 4 rows ([uncond, cond]); 1 -> 2, padded. What is tested is
    # the padding of the embeddings through the compiled call, so no kernels are built
    # (inductor's numerics are the pixel model's tests above; its build took 20 s here)
    fast.enable_compile([4], backend="aot_eager")
    fast.warm_compiled()  # with the empty prompt's embeddings
    emb = fast.encode_prompt(["a red circle", "a blue square"])
    unc = fast.encode_prompt([""])
    z = torch.randn(2, *fast.sample_shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for rows in (2, 1):
            c = Conditioning(emb[:rows], unc, guidance_scale=5.0)
            want, got = eager.eps(z[:rows], 300, c), fast.eps(z[:rows], 300, c)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert fast.compiled_calls == 3


def test_a_worker_whose_compile_fails_serves_eagerly(
    pixel_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    dn = load_denoiser(pixel_dir, name="no-compiler", device="cpu", dtype="float32")

    def no_compiler() -> None:
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

    monkeypatch.setattr(dn, "warm_compiled", no_compiler)
    compile_model(dn, max_batch=4)
    assert dn.compile_buckets == [] and "serving it eagerly" in caplog.text
    with torch.no_grad():
        dn.eps(torch.randn(2, *dn.sample_shape), 500)
    assert dn.compiled_calls == 0
