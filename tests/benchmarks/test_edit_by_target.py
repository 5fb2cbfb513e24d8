"""The direction benchmark's ``project_out``: the other factors are fitted first, to
their own targets with the same parameters, and the target's fit names their assets."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from benchmarks.defaults import TARGETS, eval_edit_by_target
from worker.training import aligned


class RecordingBench:
    """What ``eval_edit_by_target`` asks of a bench, recorded; every edit returns its
    input's labels, so the figures are those of an edit that changes nothing."""

    def __init__(self, images: np.ndarray, y: np.ndarray) -> None:
        self.gen, self.save_dir, self.all, self.y = aligned, None, images, y
        self.fits: list[tuple[str, dict[str, Any]]] = []
        self.stored: list[np.ndarray] = []

    def fit(self, method: str, **params: Any) -> tuple[str, Any]:
        self.fits.append((method, params))
        return f"asset-{len(self.fits)}", SimpleNamespace(metrics={})

    def put(self, images: np.ndarray) -> list[int]:
        self.stored = list(images)
        return list(range(len(images)))

    def payload(self, method: str, inputs: dict[str, int], **_: Any) -> int:
        return inputs["image"]

    def run(self, payloads: list[int]) -> list[int]:
        return payloads

    def images(self, outs: list[int]) -> np.ndarray:
        return np.stack([self.stored[o] for o in outs])

    def judge(
        self, outs: list[int], images: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        rows = [next(k for k, im in enumerate(self.all) if np.array_equal(im, self.stored[o]))
                for o in outs]  # fmt: skip
        return self.y[rows], np.ones(len(outs), bool)


def test_project_out_fits_the_other_factors_first_and_names_them() -> None:
    images, labels = aligned.generate(123, 40)
    y = aligned.label_array(labels)
    bench = RecordingBench(images, y)
    out = eval_edit_by_target(
        bench, "direction", "directions", images, y, 4, {"kind": "supervised"},  # type: ignore[arg-type]
        ["size"], ["shape", "size", "aspect"],
    )  # fmt: skip
    # the target's own factor is not removed from itself
    assert [(m, p["factor"], p["value"]) for m, p in bench.fits] == [
        ("directions", "shape", TARGETS["shape"]),
        ("directions", "aspect", TARGETS["aspect"]),
        ("directions", "size", TARGETS["size"]),
    ]
    assert all(p["kind"] == "supervised" for _, p in bench.fits)
    assert "project_out" not in bench.fits[0][1] and "project_out" not in bench.fits[1][1]
    assert bench.fits[2][1]["project_out"] == ["asset-1", "asset-2"]
    # an edit that changes nothing: no success, everything kept
    assert out["size=large"]["success"] == 0.0 and out["size=large"]["preservation"] == 1.0
    # the generator's own images: none grainy
    assert out["size=large"]["grainy"] == 0.0


def test_each_factor_projected_out_is_fitted_once_for_every_target() -> None:
    images, labels = aligned.generate(123, 40)
    y = aligned.label_array(labels)
    bench = RecordingBench(images, y)
    eval_edit_by_target(bench, "direction", "directions", images, y, 4, {},  # type: ignore[arg-type]
                        ["size", "aspect"], ["shape"])  # fmt: skip
    assert [(p["factor"], p.get("project_out")) for _, p in bench.fits] == [
        ("shape", None), ("size", ["asset-1"]), ("aspect", ["asset-1"]),
    ]  # fmt: skip


def test_without_project_out_one_fit_per_target() -> None:
    images, labels = aligned.generate(123, 40)
    y = aligned.label_array(labels)
    bench = RecordingBench(images, y)
    eval_edit_by_target(bench, "direction", "directions", images, y, 4, {}, ["shape"])  # type: ignore[arg-type]
    assert len(bench.fits) == 1 and "project_out" not in bench.fits[0][1]
