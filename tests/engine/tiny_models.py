"""Tiny seeded components of both model families, saved as diffusers folders.

As in diffusers' own tests: real classes, ``block_out_channels=(16, 32)``, random
weights from a fixed seed. Saved with safetensors and loaded back through the same
loader as any checkpoint, so the tests cover the loading path as well.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel, UNet2DModel

WORDS = ["a", "photo", "of", "red", "blue", "green", "circle", "square", "triangle", "small", "big"]


def build_pixel_unet(seed: int = 0, sample_size: int = 16) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=8,
    )


def build_cond_unet(seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def build_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=16,
    )


def save_pixel_model(folder: Path, seed: int = 0, sample_size: int = 16) -> Path:
    unet = build_pixel_unet(seed, sample_size)
    unet.save_pretrained(folder, safe_serialization=True)
    DDIMScheduler(beta_schedule="linear").save_config(folder)  # scheduler_config.json
    return folder


def save_cond_pipeline(folder: Path, seed: int = 0) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizer

    build_cond_unet(seed).save_pretrained(folder / "unet", safe_serialization=True)
    build_vae(seed).save_pretrained(folder / "vae", safe_serialization=True)
    torch.manual_seed(seed)
    text = BertModel(
        BertConfig(
            vocab_size=len(WORDS) + 5,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=37,
            max_position_embeddings=32,
        )
    )
    text.save_pretrained(folder / "text_encoder", safe_serialization=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizer(str(vocab)).save_pretrained(folder / "tokenizer")
    vocab.unlink()
    DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_config(
        folder / "scheduler"
    )
    index = {"_class_name": "StableDiffusionPipeline", "max_prompt_length": 16}
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def save_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A tiny seeded ``CLIPModel`` (16 px ViT, 1-layer text tower) with a word tokenizer."""
    from transformers import BertTokenizer, CLIPConfig, CLIPModel

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
            "pad_token_id": 0,
            "bos_token_id": 2,
            "eos_token_id": 3,  # [SEP]: pooled at the first end-of-text token
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 16,
            "patch_size": 4,
        },
        projection_dim=24,
    )
    CLIPModel(config).save_pretrained(folder, safe_serialization=True)
    words = folder / "vocab.txt"
    words.write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(words)).save_pretrained(folder)
    return folder
