"""Generator v3: one centred object, aligned like the papers' faces and churches.

The quadrant domain of v2 (``shapes.py``, gone with its models) put each object
anywhere, so every factor lived on whichever cells its object covered, and an h-space
injection could not take one image's look while keeping another's shape. Here the
object is centred (a jitter of at most two pixels at 32 px), so content and style
overlap in space.

Content factors (geometry): shape (circle, square, triangle), size (small, large),
aspect (wide, tall: the object is stretched 1.3x along one axis and squeezed along
the other). Style factors: object colour, background colour. Drawn at 4x and
box-downsampled (anti-aliased edges), with small colour jitter. Deterministic from
a seed; numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
ASPECTS = ("wide", "tall")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 80, 220),
    "yellow": (230, 210, 40),
}
BACKGROUNDS = {"black": (20, 20, 20), "grey": (128, 128, 128), "white": (235, 235, 235)}

FACTORS: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "size": SIZES,
    "aspect": ASPECTS,
    "colour": tuple(COLOURS),
    "background": tuple(BACKGROUNDS),
}
CONTENT_FACTORS = ("shape", "size", "aspect")
STYLE_FACTORS = ("colour", "background")
JITTER_PX = 2.0  # at 32 px; scaled with the image
STRETCH = 1.3


@dataclass(frozen=True)
class Labels:
    shape: int
    size: int
    aspect: int
    colour: int
    background: int

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in FACTORS}

    def caption(self, named: frozenset[str] | None = None) -> str:
        """ "a small wide red triangle on a grey background"; unnamed factors are left out
        (an unnamed shape reads "shape")."""
        named = frozenset(FACTORS) if named is None else named
        words = [
            SIZES[self.size] if "size" in named else "",
            ASPECTS[self.aspect] if "aspect" in named else "",
            tuple(COLOURS)[self.colour] if "colour" in named else "",
            SHAPES[self.shape] if "shape" in named else "shape",
        ]
        text = "a " + " ".join(w for w in words if w)
        if "background" in named:
            text += f" on a {tuple(BACKGROUNDS)[self.background]} background"
        return text


def random_labels(rng: np.random.Generator) -> Labels:
    return Labels(*(int(rng.integers(len(values))) for values in FACTORS.values()))


def shape_mask(
    shape: int, radius: float, centre: tuple[float, float], n: int, stretch: tuple[float, float]
) -> np.ndarray:
    """(n, n) bool: a circle, square or upward triangle (inscribed in the circle of the same
    radius) centred at ``centre`` (y, x) on an n x n canvas, scaled by ``stretch`` (y, x)."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) + 0.5
    dy, dx = (yy - centre[0]) / stretch[0], (xx - centre[1]) / stretch[1]
    if shape == 0:
        mask: np.ndarray = dx**2 + dy**2 <= radius**2
    elif shape == 1:
        half = radius * 0.85
        mask = (np.abs(dx) <= half) & (np.abs(dy) <= half)
    else:
        top, bottom = -radius, radius * 0.6
        half_width = (dy - top) / (bottom - top) * radius * 1.05
        mask = (dy >= top) & (dy <= bottom) & (np.abs(dx) <= half_width)
    return mask


def object_mask(labels: Labels, centre: tuple[float, float], n: int) -> np.ndarray:
    """(n, n) bool: the object's pixels on an n x n canvas, centred at ``centre`` (y, x)."""
    radius = (0.17 if labels.size == 0 else 0.3) * n
    stretch = (1 / STRETCH, STRETCH) if labels.aspect == 0 else (STRETCH, 1 / STRETCH)
    return shape_mask(labels.shape, radius, centre, n, stretch)


def render(
    labels: Labels, rng: np.random.Generator, size: int = 32, supersample: int = 4
) -> np.ndarray:
    """One (size, size, 3) uint8 image of the given factors."""
    n = size * supersample
    jitter = rng.uniform(-JITTER_PX, JITTER_PX, size=2) * n / 32
    mask = object_mask(labels, (n / 2 + jitter[0], n / 2 + jitter[1]), n)
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


def _same_jitter(
    a: Labels, b: Labels, rng: np.random.Generator, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """``a`` and ``b`` rendered with one draw of jitter and colour noise (from ``rng``)."""
    jitter_seed = int(rng.integers(2**31))
    return (
        render(a, np.random.default_rng(jitter_seed), size),
        render(b, np.random.default_rng(jitter_seed), size),
    )


def twins(
    factor: str, pairs: int, seed: int, size: int = 32
) -> tuple[np.ndarray, np.ndarray, list[Labels], list[Labels]]:
    """Pairs (A, B) equal in every factor but ``factor``, drawn with the same jitter."""
    rng = np.random.default_rng(seed)
    index = list(FACTORS).index(factor)
    a_imgs, b_imgs, a_labels, b_labels = [], [], [], []
    for _ in range(pairs):
        values = [int(rng.integers(len(v))) for v in FACTORS.values()]
        other = list(values)
        k = len(FACTORS[factor])
        other[index] = (values[index] + 1 + int(rng.integers(k - 1))) % k
        a_labels.append(Labels(*values))
        b_labels.append(Labels(*other))
        a_img, b_img = _same_jitter(a_labels[-1], b_labels[-1], rng, size)
        a_imgs.append(a_img)
        b_imgs.append(b_img)
    return np.stack(a_imgs), np.stack(b_imgs), a_labels, b_labels


def style_twins(seed: int, pairs: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (A, B) with the same content and jitter and a different style: B changes
    the object colour, the background or both (a third each). For training an h that
    the style does not move."""
    rng = np.random.default_rng(seed)
    a_imgs, b_imgs = [], []
    for _ in range(pairs):
        a = random_labels(rng)
        which = int(rng.integers(3))
        colour, background = a.colour, a.background
        if which in (0, 2):
            colour = (colour + 1 + int(rng.integers(len(COLOURS) - 1))) % len(COLOURS)
        if which in (1, 2):
            k = len(BACKGROUNDS)
            background = (background + 1 + int(rng.integers(k - 1))) % k
        b = Labels(a.shape, a.size, a.aspect, colour, background)
        a_img, b_img = _same_jitter(a, b, rng, size)
        a_imgs.append(a_img)
        b_imgs.append(b_img)
    return np.stack(a_imgs), np.stack(b_imgs)


def label_array(labels: list[Labels]) -> np.ndarray:
    """(N, 5) int64, columns in ``FACTORS`` order."""
    return np.array([[getattr(lab, f) for f in FACTORS] for lab in labels], dtype=np.int64)
