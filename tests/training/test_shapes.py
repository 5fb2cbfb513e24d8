from __future__ import annotations

import numpy as np

from worker.training.shapes import FACTORS, generate, label_array


def test_generator_is_deterministic_from_its_seed() -> None:
    a, la = generate(3, 16)
    b, lb = generate(3, 16)
    c, _ = generate(4, 16)
    assert np.array_equal(a, b) and la == lb
    assert not np.array_equal(a, c)
    assert a.shape == (16, 32, 32, 3) and a.dtype == np.uint8


def test_every_factor_value_appears_and_factors_are_independent() -> None:
    _, labels = generate(0, 2000)
    arr = label_array(labels)
    for column, values in enumerate(FACTORS.values()):
        counts = np.bincount(arr[:, column], minlength=len(values))
        assert counts.min() > 0.6 * len(arr) / len(values)
    # shape and colour are drawn independently: every pair occurs
    pairs = {(s, c) for s, c in arr[:, [0, 3]]}
    assert len(pairs) == len(FACTORS["shape"]) * len(FACTORS["colour"])


def test_foreground_takes_the_labelled_colour() -> None:
    images, labels = generate(1, 64)
    for image, lab in zip(images, labels, strict=True):
        centre_row, centre_col = divmod(lab.position, 2)
        y, x = int((0.3 + 0.4 * centre_row) * 32), int((0.3 + 0.4 * centre_col) * 32)
        pixel = image[y, x].astype(int)
        dominant = {0: 0, 1: 1, 2: 2}  # red, green, blue have that channel highest
        if lab.colour in dominant:
            assert pixel.argmax() == dominant[lab.colour], lab.caption()


def test_caption_names_every_factor() -> None:
    _, labels = generate(2, 1)
    caption = labels[0].caption()
    for name, values in FACTORS.items():
        assert values[getattr(labels[0], name)] in caption


def test_partial_captions_name_only_the_named_factors() -> None:
    _, labels = generate(3, 1)
    lab = labels[0]
    caption = lab.caption(frozenset({"shape", "colour"}))
    assert caption == f"a {FACTORS['colour'][lab.colour]} {FACTORS['shape'][lab.shape]}"
    assert lab.caption(frozenset({"background"})).startswith("a shape on a ")
    assert lab.caption(frozenset(FACTORS)) == lab.caption()
