"""A fit that yields to edits at its step boundaries makes the asset it makes alone.

The worker runs queued edits inside a fit's progress callback (``worker.yielding``),
on the same resident U-Net, while the fit's hooks and tensors wait in its frames.
Here every step boundary of each kind of fit runs an edit batch (one that attaches
hooks of its own, under the same names a fit uses); the assets must be bit-identical
to an uninterrupted run's, and the edits' outputs to theirs when run alone.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from contract.jobs import JobKind, JobPayload
from store.blobs import LocalBlobStore
from worker.engine import Denoiser
from worker.engine.classifier import AttributeClassifier
from worker.executor import JobOutput, RunContext, prepare, run_batch
from worker.yielding import PhaseProgress, YieldBudget


def _classifier() -> AttributeClassifier:
    torch.manual_seed(0)  # a fixed random judge: top-K picks need no trained one
    return AttributeClassifier({"colour": ["red", "blue"]}, width=8, image_size=16).eval()


def _blob(store: LocalBlobStore, seed: int, size: int = 16) -> str:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return store.put(buf.getvalue())


class _Assets:
    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}

    def get(self, asset_id: str) -> dict[str, Any] | None:
        return self.records.get(asset_id)


def _edits(denoiser: Denoiser, store: LocalBlobStore) -> list[JobPayload]:
    """Edits that use hooks (inject: h; reconstruct: none) or prompts, for the model."""
    image = _blob(store, 99)
    if denoiser.conditional:
        return [
            JobPayload(id="e1", kind=JobKind.EDIT, model="m", method="reconstruct",
                       params={"steps": 3, "prompt": "a red circle"}, inputs={"image": image}),
        ]  # fmt: skip
    other = _blob(store, 98)
    return [
        JobPayload(id="e1", kind=JobKind.EDIT, model="m", method="inject",
                   params={"steps": 4, "t_edit": 300, "t_boost": 100},
                   inputs={"content": image, "style": other}),
        JobPayload(id="e2", kind=JobKind.EDIT, model="m", method="reconstruct",
                   params={"steps": 3}, inputs={"image": other}),
    ]  # fmt: skip


def _run(
    denoiser: Denoiser, payload: JobPayload, store: LocalBlobStore, ctx: RunContext,
    progress: Callable[..., None],
) -> JobOutput:  # fmt: skip
    return run_batch(denoiser, [prepare(payload, denoiser, store)], progress, context=ctx)[0]


def _fits(store: LocalBlobStore) -> dict[str, tuple[str, JobPayload]]:
    pos = [_blob(store, i) for i in range(4)]
    neg = [_blob(store, 10 + i) for i in range(4)]
    image = _blob(store, 20)

    def fit(method: str, **params: object) -> JobPayload:
        inputs = {"image": image} if params.get("kind") == "jacobian" else {}
        return JobPayload(id="f", kind=JobKind.FIT, model="m", method=method, seed=5,
                          params={"name": "n", **params}, inputs=inputs)  # fmt: skip

    return {
        "pca": ("pixel", fit("directions", kind="pca", steps=4, samples=8, k=2)),
        "supervised": (
            "pixel",
            fit(
                "directions",
                kind="supervised",
                steps=4,
                samples=8,
                top_k=2,
                factor="colour",
                value="red",
            ),
        ),
        "labelled": (
            "pixel",
            fit("directions", kind="supervised", steps=4, positives=pos, negatives=neg),
        ),
        "jacobian": ("pixel", fit("directions", kind="jacobian", steps=3, k=2, iters=4)),
        # labelled: a random classifier's scores could put every sample in one class
        "boundary": (
            "pixel",
            fit("boundary", steps=4, positives=pos, negatives=neg, held_out=0.25),
        ),
        "boundary-t0": (
            "pixel",
            fit("boundary", steps=4, positives=pos, negatives=neg, t0=300, held_out=0.0),
        ),
        "lam": ("cond", fit("lam", neutral="a circle", target="a red circle", steps=3, epochs=2)),
        "style-noise": ("pixel", fit("style-noise", images=pos)),
    }


@pytest.mark.parametrize(
    "kind",
    ["pca", "supervised", "labelled", "jacobian", "boundary", "boundary-t0", "lam",
     "style-noise"],
)  # fmt: skip
def test_a_fit_interrupted_by_edits_at_every_step_makes_the_same_asset(
    kind: str, pixel: Denoiser, cond: Denoiser, tmp_path: Path
) -> None:
    store = LocalBlobStore(tmp_path)
    clf = _classifier()
    ctx = RunContext(blobs=store, assets=_Assets(), classifier=clf)
    family, payload = _fits(store)[kind]
    denoiser = pixel if family == "pixel" else cond
    edits = _edits(denoiser, store)
    alone = _run(denoiser, payload, store, ctx, lambda *_: None)
    edits_alone = [_run(denoiser, e, store, ctx, lambda *_: None).images for e in edits]

    boundaries: list[tuple[int, int, str | None]] = []
    edit_outputs: list[list[bytes]] = []

    def yielding(step: int, total: int, phase: str | None = None) -> None:
        boundaries.append((step, total, phase))
        for edit in edits:  # what the worker does at a boundary with edits queued
            edit_outputs.append(_run(denoiser, edit, store, ctx, lambda *_: None).images)

    interrupted = _run(denoiser, payload, store, ctx, yielding)
    assert alone.asset is not None and interrupted.asset is not None
    assert alone.asset.tensors.keys() == interrupted.asset.tensors.keys()
    for name, tensor in alone.asset.tensors.items():
        assert torch.equal(tensor, interrupted.asset.tensors[name]), name
    assert alone.asset.meta == interrupted.asset.meta
    assert alone.images == interrupted.images
    if kind != "style-noise":  # a style-noise fit is statistics, with no model step
        assert len(boundaries) >= 3
    # each edit run inside the fit gave what it gives alone
    assert edit_outputs == edits_alone * len(boundaries)
    assert denoiser.hooks.active == []


def test_a_boundary_fit_reports_its_phases_with_their_own_steps(
    pixel: Denoiser, tmp_path: Path
) -> None:
    store = LocalBlobStore(tmp_path)
    clf = _classifier()
    ctx = RunContext(blobs=store, assets=_Assets(), classifier=clf)
    payload = _fits(store)["boundary"][1]
    seen: list[tuple[int, int, str | None]] = []
    _run(pixel, payload, store, ctx, lambda s, n, phase=None: seen.append((s, n, phase)))
    phases = list(dict.fromkeys(phase for _, _, phase in seen))
    assert phases == ["mixing-step search", "inversion to t0"]
    for phase in phases:
        steps = [(s, n) for s, n, p in seen if p == phase]
        assert steps[-1][0] == steps[-1][1] and len(steps) >= 1


def test_the_yield_budget_bounds_edit_time_per_window() -> None:
    budget = YieldBudget(share=0.5, window_s=60)
    assert budget.allows(0.0)
    budget.spend(0.0, 20.0)
    assert budget.spent(20.0) == 20.0 and budget.allows(20.0)
    budget.spend(25.0, 35.0)
    assert budget.spent(35.0) == 30.0 and not budget.allows(35.0)  # half of the minute
    # the window slides: at t = 70 only 10..20 and 25..35 are inside it (20 s)
    assert budget.spent(70.0) == 20.0 and budget.allows(70.0)
    assert budget.spent(200.0) == 0.0 and not budget.spans
    assert not YieldBudget(share=0.0).allows(0.0)


def test_progress_reports_each_phase_and_its_time_left() -> None:
    now = [100.0]
    shown = PhaseProgress(clock=lambda: now[0])
    assert shown.report(1, 10, "sampling").model_dump() == {
        "step": 1, "total": 10, "phase": "sampling", "eta_s": None
    }  # fmt: skip
    now[0] = 104.0
    assert shown.report(3, 10, "sampling").eta_s == 14.0  # 2 s a step, 7 to go
    now[0] = 105.0
    assert shown.report(1, 40, "search").eta_s is None  # a new phase: pace unknown
    now[0] = 106.0
    assert shown.report(5, 40, "search").eta_s == 8.8  # 0.25 s a step, 35 to go
