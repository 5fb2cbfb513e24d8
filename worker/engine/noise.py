"""Noise draws: seeded, portable, one generator per row when asked, and a model's prior.

Kept apart from ``sampling`` so the ``Denoiser`` can draw its own prior noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from worker.engine.errors import InputError

__all__ = ["Generators", "prior_noise", "randn"]

Generators = torch.Generator | Sequence[torch.Generator] | None


def randn(shape: Sequence[int], generator: Generators, device: torch.device) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device, then moved (seeded = portable).

    With one generator per sample (a list as long as the batch), each row comes from its
    own generator, so a seeded job gives the same result whatever batch it runs in.
    """
    if isinstance(generator, Sequence):
        if len(generator) != shape[0]:
            raise InputError(f"generator: {len(generator)} generators for a batch of {shape[0]}")
        return torch.cat([randn((1, *shape[1:]), g, device) for g in generator])
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(tuple(shape), generator=generator, device=gen_device).to(device)


def prior_noise(
    shape: Sequence[int], generator: Generators, device: torch.device, offset: float = 0.0
) -> torch.Tensor:
    """Noise of a model's forward process: ``eps + offset * o``, one o ~ N(0, 1) per (row, channel).

    A model trained with offset noise (Guttenberg 2023) learned q(x_t | x_0) with this
    noise, so its prior x_T and the fresh noise of each stochastic step must have it
    too: drawn from N(0, I) alone, the mean colour of a 32x32 image starts with about a
    third of the spread the model expects (1/32 against sqrt(1/1024 + 0.1^2)) and
    samples collapse to mid-grey backgrounds. With ``offset = 0`` this is ``randn``
    exactly (the same draws from the same generator). With per-row generators each
    draws its row's eps, then its row's offsets, whatever the batch.
    """
    if offset <= 0:
        return randn(shape, generator, device)
    eps = randn(shape, generator, device)
    per_channel = randn((shape[0], shape[1], *([1] * (len(shape) - 2))), generator, device)
    return eps + offset * per_channel
