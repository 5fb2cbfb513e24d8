"""A procedural, seeded image generator with independent, labelled factors.

Content factors: shape kind, size, position. Style factors: foreground colour,
background colour. Every image is drawn at 4x resolution and box-downsampled, so
edges are anti-aliased; small jitters (position, colour) keep the set from being
a finite list. Deterministic from a seed; numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worker.training.aligned import BACKGROUNDS, COLOURS, SHAPES, SIZES, shape_mask

__all__ = [
    "BACKGROUNDS", "COLOURS", "CONTENT_FACTORS", "FACTORS", "POSITIONS", "SHAPES", "SIZES",
    "STYLE_FACTORS", "Labels", "generate", "label_array", "random_labels", "render",
]  # fmt: skip

POSITIONS = ("top left", "top right", "bottom left", "bottom right")

FACTORS: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "size": SIZES,
    "position": POSITIONS,
    "colour": tuple(COLOURS),
    "background": tuple(BACKGROUNDS),
}
CONTENT_FACTORS = ("shape", "size", "position")
STYLE_FACTORS = ("colour", "background")


@dataclass(frozen=True)
class Labels:
    shape: int
    size: int
    position: int
    colour: int
    background: int

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in FACTORS}

    def caption(self, named: frozenset[str] | None = None) -> str:
        """The caption naming the factors in ``named`` (all of them by default).

        "a small red triangle at the top left on a grey background"; an unnamed shape
        reads "shape" ("a red shape"), an unnamed position or background is left out.
        """
        named = frozenset(FACTORS) if named is None else named
        words = [
            SIZES[self.size] if "size" in named else "",
            tuple(COLOURS)[self.colour] if "colour" in named else "",
            SHAPES[self.shape] if "shape" in named else "shape",
        ]
        text = "a " + " ".join(w for w in words if w)
        if "position" in named:
            text += f" at the {POSITIONS[self.position]}"
        if "background" in named:
            text += f" on a {tuple(BACKGROUNDS)[self.background]} background"
        return text


def random_labels(rng: np.random.Generator) -> Labels:
    return Labels(*(int(rng.integers(len(values))) for values in FACTORS.values()))


def render(
    labels: Labels, rng: np.random.Generator, size: int = 32, supersample: int = 4
) -> np.ndarray:
    """One (size, size, 3) uint8 image of the given factors."""
    n = size * supersample
    radius = (0.16 if labels.size == 0 else 0.27) * n
    row, col = divmod(labels.position, 2)
    jitter = rng.uniform(-0.04, 0.04, size=2) * n
    cy = (0.3 + 0.4 * row) * n + jitter[0]
    cx = (0.3 + 0.4 * col) * n + jitter[1]
    mask = shape_mask(labels.shape, radius, (cy, cx), n, (1.0, 1.0))
    fg = np.array(tuple(COLOURS.values())[labels.colour], np.float32) + rng.normal(0, 6, 3)
    bg = np.array(tuple(BACKGROUNDS.values())[labels.background], np.float32) + rng.normal(0, 4, 3)
    big = np.where(mask[..., None], fg, bg)
    small = big.reshape(size, supersample, size, supersample, 3).mean(axis=(1, 3))
    out: np.ndarray = np.clip(np.rint(small), 0, 255).astype(np.uint8)
    return out


def generate(seed: int, count: int, size: int = 32) -> tuple[np.ndarray, list[Labels]]:
    """``count`` images (N, size, size, 3) uint8 and their labels, deterministic from ``seed``."""
    rng = np.random.default_rng(seed)
    labels = [random_labels(rng) for _ in range(count)]
    images = np.stack([render(lab, rng, size) for lab in labels])
    return images, labels


def label_array(labels: list[Labels]) -> np.ndarray:
    """(N, 5) int64, columns in ``FACTORS`` order."""
    return np.array([[getattr(lab, f) for f in FACTORS] for lab in labels], dtype=np.int64)
