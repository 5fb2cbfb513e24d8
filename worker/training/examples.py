"""The repository's example images: generator v3 renders, named by their factors.

Chosen so that every method has inputs in ``examples/``: pairs that differ in every
factor (content and style for method A), one image of each shape, every colour and
background at least once. Held out of training: each is rendered from its own seed,
far from the trainers' seeds (``seed * 1_000_003 + step``).

    python -m worker.training.examples --out examples
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from worker.training.aligned import FACTORS, Labels, render

EXAMPLE_SEED = 4_100_000_000
# (shape, size, aspect, colour, background), by name
EXAMPLES = (
    ("circle", "small", "wide", "yellow", "grey"),
    ("triangle", "large", "tall", "blue", "white"),
    ("square", "small", "tall", "red", "black"),
    ("circle", "large", "wide", "green", "white"),
    ("triangle", "small", "wide", "red", "grey"),
    ("square", "large", "wide", "blue", "black"),
)


def example_labels(names: tuple[str, str, str, str, str]) -> Labels:
    return Labels(*(FACTORS[f].index(v) for f, v in zip(FACTORS, names, strict=True)))


def file_name(names: tuple[str, str, str, str, str]) -> str:
    shape, size, aspect, colour, background = names
    return f"{size}-{aspect}-{colour}-{shape}-on-{background}.png"


def write_examples(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, names in enumerate(EXAMPLES):
        image = render(example_labels(names), np.random.default_rng(EXAMPLE_SEED + i))
        path = out / file_name(names)
        Image.fromarray(image).save(path, optimize=True)
        paths.append(path)
    return paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="examples")
    for path in write_examples(Path(p.parse_args().out)):
        print(path)


if __name__ == "__main__":
    main()
