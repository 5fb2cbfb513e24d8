from __future__ import annotations

import math

import pytest
import torch

from worker.training.domains import DOMAINS, domain
from worker.training.train_text import all_captions, draw_named


@pytest.mark.parametrize("name", sorted(DOMAINS))
def test_every_caption_is_listed_once(name: str) -> None:
    factors = domain(name).FACTORS
    captions = all_captions(name)
    # each factor named (one of its values) or not
    assert len(captions) == len(set(captions)) == math.prod(len(v) + 1 for v in factors.values())
    assert "a red triangle" in captions and "a shape" in captions


def test_aligned_captions_name_the_aspect() -> None:
    captions = all_captions("aligned")
    assert "a small wide red triangle on a grey background" in captions
    assert "a tall shape" in captions


def test_draw_named_gives_full_captions_at_the_asked_share() -> None:
    factors = domain("aligned").FACTORS
    gen = torch.Generator().manual_seed(0)
    draws = [draw_named(gen, 0.5, factors) for _ in range(4000)]
    full = sum(d == frozenset(factors) for d in draws) / len(draws)
    # 0.5 full, plus 1/32 of the partial draws that happen to name everything (5 factors);
    # the standard error of a share near 0.5 over 4000 draws is 0.008, so 0.03 is ~4 sigma
    assert abs(full - (0.5 + 0.5 / 2 ** len(factors))) < 0.03
    shape_named = sum("shape" in d for d in draws) / len(draws)
    assert abs(shape_named - 0.75) < 0.03
