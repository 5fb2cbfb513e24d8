"""The inject benchmark's pixel diagnostic: which colour an output shows where the
content's object lies, inside and outside the style image's object."""

from __future__ import annotations

import numpy as np

from benchmarks.defaults import _colour_by_overlap, _differing_pairs, _object_pixels
from worker.training import aligned


def test_object_pixels_are_the_rendered_objects() -> None:
    rng = np.random.default_rng(0)
    lab = aligned.Labels(shape=1, size=1, aspect=0, colour=2, background=2)
    image = aligned.render(lab, rng)
    mask = _object_pixels(aligned, image[None], aligned.label_array([lab]))[0]
    # a large square is a block in the middle; the corners are background
    assert mask[16, 16] and not mask[0, 0] and not mask[31, 31]
    assert 0.15 < mask.mean() < 0.6


def test_the_diagnostic_reads_a_copy_of_either_input() -> None:
    content, style, c_lab, s_lab = _differing_pairs(aligned, 16, 5)
    # the style image itself: its colour inside its object, background outside
    as_style = _colour_by_overlap(aligned, style, content, style, c_lab, s_lab)
    inside, outside = as_style["inside_the_style_object"], as_style["outside_the_style_object"]
    assert inside["pixels"] > 0 and outside["pixels"] > 0
    assert inside["style_colour"] > 0.9 and inside["content_colour"] == 0.0
    assert outside["a_background"] > 0.9
    # the content image itself: its own colour wherever its object is
    as_content = _colour_by_overlap(aligned, content, content, style, c_lab, s_lab)
    for where in as_content.values():
        assert where["content_colour"] > 0.9 and where["style_colour"] == 0.0
