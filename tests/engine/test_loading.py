"""Loading from folders; what is refused and how the refusal reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from worker.engine import (
    ModelLoadError,
    ModelRegistry,
    ModelSpec,
    UnsafeWeightsError,
    load_denoiser,
)
from worker.engine.devices import full_fp32_on_cuda, resolve_dtype


def test_pickled_weights_are_refused(pixel_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    shutil.copytree(pixel_dir, folder)
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    (folder / "diffusion_pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(
        UnsafeWeightsError, match=r"only pickled weights \(diffusion_pytorch_model\.bin\)"
    ):
        load_denoiser(folder, device="cpu")


def test_missing_folder_says_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"config\.json \+ \*\.safetensors"):
        load_denoiser(tmp_path / "nope", device="cpu")


def test_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not a diffusers model folder"):
        load_denoiser(tmp_path, device="cpu")


def test_unreachable_hub_id_points_at_local_folders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match=r"point --model .* at the local folder"):
        load_denoiser("google/ddpm-editserve-test-does-not-exist", device="cpu")


def test_pipeline_missing_text_encoder(cond_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "cond"
    shutil.copytree(cond_dir, folder)
    shutil.rmtree(folder / "text_encoder")
    with pytest.raises(ModelLoadError, match="without text_encoder/"):
        load_denoiser(folder, device="cpu")


def test_fp16_on_cpu_is_refused() -> None:
    with pytest.raises(ValueError, match="float16 is not supported on the CPU"):
        resolve_dtype("float16", torch.device("cpu"))


def test_dtype_policy_defaults() -> None:
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16


def test_float32_on_cuda_turns_tf32_off_and_nothing_else_does() -> None:
    # the flags are plain settings: no GPU needed to check the policy
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        assert not full_fp32_on_cuda(torch.device("cpu"), torch.float32)
        assert not full_fp32_on_cuda(torch.device("cuda"), torch.float16)
        assert not full_fp32_on_cuda(torch.device("cuda"), torch.bfloat16)
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        assert full_fp32_on_cuda(torch.device("cuda"), torch.float32)
        assert not torch.backends.cudnn.allow_tf32
        assert not torch.backends.cuda.matmul.allow_tf32
        assert not full_fp32_on_cuda(torch.device("cuda"), torch.float32)  # already off
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_registry_loads_once_and_freezes(pixel_dir: Path) -> None:
    registry = ModelRegistry([ModelSpec("tiny", str(pixel_dir), device="cpu", dtype="float32")])
    first = registry.get("tiny")
    assert registry.get("tiny") is first
    assert not first.unet.training
    assert not any(p.requires_grad for p in first.unet.parameters())


def test_registry_unknown_model_lists_known(pixel_dir: Path) -> None:
    registry = ModelRegistry([ModelSpec("tiny", str(pixel_dir))])
    with pytest.raises(ModelLoadError, match="unknown model 'big'; known models: tiny"):
        registry.get("big")


def test_pixel_text_pipeline_with_a_packaged_encoder(tmp_path: Path) -> None:
    # the shipped text model's layout: no vae/, the encoder from an installed package
    from diffusers import DDPMScheduler, UNet2DConditionModel

    from worker.training.train_text import ENCODER_PACKAGE, encode_captions

    torch.manual_seed(0)
    UNet2DConditionModel(
        sample_size=8,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=384,
        attention_head_dim=2,
        norm_num_groups=8,
        in_channels=3,
        out_channels=3,
    ).save_pretrained(tmp_path / "unet", safe_serialization=True)
    DDPMScheduler().save_pretrained(tmp_path / "scheduler")
    index = {"vae": [None, None], "text_encoder_package": ENCODER_PACKAGE, "max_prompt_length": 16}
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    model = load_denoiser(tmp_path)
    assert model.family == "pixel" and model.conditional and model.image_shape == (3, 8, 8)
    prompt = "a small red circle at the top left on a black background"
    # what the model was trained on is what the service feeds it
    assert torch.equal(model.encode_prompt([prompt]), encode_captions([prompt]))
    eps = model.eps(torch.zeros(1, 3, 8, 8), 500, model.conditioning([prompt], 3.0))
    assert eps.shape == (1, 3, 8, 8) and torch.isfinite(eps).all()

    index["text_encoder_package"] = "no_such_package_here"
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelLoadError, match="pip install no-such-package-here"):
        load_denoiser(tmp_path)


def test_a_folders_editing_defaults_are_read_and_a_bad_file_refused(
    pixel_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "with-defaults"
    shutil.copytree(pixel_dir, folder)
    assert load_denoiser(folder, device="cpu").editing_defaults == {}
    (folder / "editing_defaults.json").write_text(
        json.dumps({"methods": {"inject": {"g": 0.5}}, "measured": {"g": "a note"}})
    )
    dn = load_denoiser(folder, device="cpu")
    assert dn.editing_defaults == {"inject": {"g": 0.5}}
    assert dn.describe().editing_defaults == {"inject": {"g": 0.5}}
    (folder / "editing_defaults.json").write_text(json.dumps({"methods": {"inject": 0.5}}))
    with pytest.raises(ModelLoadError, match="'methods' must map method names to objects"):
        load_denoiser(folder, device="cpu")
