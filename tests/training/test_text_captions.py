from __future__ import annotations

import math

import torch

from worker.training.shapes import FACTORS
from worker.training.train_text import all_captions, draw_named


def test_every_caption_is_listed_once() -> None:
    captions = all_captions()
    # each factor named (one of its values) or not
    assert len(captions) == len(set(captions)) == math.prod(len(v) + 1 for v in FACTORS.values())
    assert "a red triangle" in captions and "a shape" in captions


def test_draw_named_gives_full_captions_at_the_asked_share() -> None:
    gen = torch.Generator().manual_seed(0)
    draws = [draw_named(gen, 0.5) for _ in range(4000)]
    full = sum(d == frozenset(FACTORS) for d in draws) / len(draws)
    # 0.5 full, plus 1/32 of the partial draws that happen to name everything
    assert abs(full - (0.5 + 0.5 / 32)) < 0.03
    shape_named = sum("shape" in d for d in draws) / len(draws)
    assert abs(shape_named - 0.75) < 0.03
