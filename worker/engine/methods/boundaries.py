"""Method B: semantic boundaries at the mixing step (BoundaryDiffusion, Zhu et al. 2023).

METHODS.md, section B:

1. Invert labelled images with DDIM to the mixing step t0 (grid
   ``linspace(0, 1, n) * t0``); features: x_t0 (flattened) and h at t0.
2. Fit a linear SVM on each (scikit-learn's ``SVC(kernel="linear")``, as the
   reference does: libsvm leaves the intercept unpenalised, where liblinear's
   ``LinearSVC`` penalises it like a weight and pulls every hyperplane towards the
   origin), with classes weighted to balance; report held-out accuracy, balanced
   accuracy and the majority baseline. We keep the intercept: the signed distance is
   ``(w . z + b) / ||w||`` (the reference code drops b).
3. Edit: invert the image to t0, move x_t0 to the signed distance d,
   ``z' = z + (d - dist(z)) n``, and h at the first denoising step likewise
   (one-step edit), then denoise from t0 with a given eta.
4. Mixing step search (the paper describes it, the released code hard-codes 500):
   the earliest grid step whose inverted latents' radius ``||x_t|| / sqrt(D)``
   matches that of N(0, I) within a tolerance.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import torch

from worker.engine.assets import grid_of, pack, unpack
from worker.engine.denoiser import Denoiser
from worker.engine.errors import InputError
from worker.engine.noise import Generators
from worker.engine.sampling import ProgressFn, ddim_invert, ddim_sample
from worker.engine.schedule import timestep_grid


@dataclass
class Boundary:
    """A hyperplane ``n . z + offset = 0`` with unit normal n (the feature's shape)."""

    normal: torch.Tensor
    offset: float
    accuracy: float  # held out
    train_accuracy: float
    balanced_accuracy: float = float("nan")  # held out: the mean of the per-class recalls
    majority_baseline: float = float("nan")  # held out: always answering the larger class

    def distance(self, z: torch.Tensor) -> torch.Tensor:
        """Signed distance of each row of z (B, *shape) to the hyperplane."""
        flat = z.reshape(z.shape[0], -1).float()
        return flat @ self.normal.reshape(-1).float() + self.offset

    def move_to(self, z: torch.Tensor, d: float) -> torch.Tensor:
        """z' = z + (d - dist(z)) n: every row ends at signed distance d."""
        shift = (d - self.distance(z)).view(-1, *([1] * (z.ndim - 1)))
        return z.float() + shift * self.normal.to(z.device).float().unsqueeze(0)


def fit_boundary(
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    held_out: float = 0.2,
    c: float = 1.0,
    seed: int = 0,
) -> Boundary:
    """A linear SVM on (N, *shape) features with binary labels, classes balanced; accuracy,
    balanced accuracy and the majority baseline on a held-out split."""
    from sklearn.svm import SVC

    y = labels.reshape(-1).long().numpy()
    if set(np.unique(y).tolist()) != {0, 1}:
        raise InputError("labels: a boundary needs examples of both classes")
    x = features.reshape(features.shape[0], -1).double().numpy()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_test = round(held_out * len(y))
    test, train = order[:n_test], order[n_test:]
    if len(set(y[train].tolist())) < 2:
        raise InputError("labels: the training split lacks one class; give more examples")
    svm = SVC(kernel="linear", C=c, class_weight="balanced")
    svm.fit(x[train], y[train])
    w, b = np.asarray(svm.coef_).reshape(-1), float(svm.intercept_[0])
    norm = float(np.linalg.norm(w))
    if n_test:
        hit = svm.predict(x[test]) == y[test]
        accuracy = float(hit.mean())
        recalls = [float(hit[y[test] == k].mean()) for k in (0, 1) if (y[test] == k).any()]
        balanced = float(np.mean(recalls))
        majority = float(max((y[test] == 1).mean(), (y[test] == 0).mean()))
    else:
        accuracy = balanced = majority = float("nan")
    return Boundary(
        normal=torch.from_numpy(w / norm).float().reshape(features.shape[1:]),
        offset=b / norm,
        accuracy=accuracy,
        train_accuracy=float((svm.predict(x[train]) == y[train]).mean()),
        balanced_accuracy=balanced,
        majority_baseline=majority,
    )


@dataclass
class MixingSearch:
    t0: int
    radius: dict[int, tuple[float, float]]  # t -> (mean, std) of ||x_t|| / sqrt(D)
    reference: tuple[float, float]  # the same for N(0, I)
    found: bool = True  # False: no step was within tol; t0 is then the last step


def find_mixing_step(
    denoiser: Denoiser,
    x0: torch.Tensor,
    *,
    steps: int = 40,
    tol: float = 0.02,
    refine: int,
    generator: torch.Generator | None = None,
    progress: ProgressFn | None = None,
) -> MixingSearch:
    """The earliest step at which DDIM-inverted latents have the radius of N(0, I) noise.

    Radius statistics: the mean of ``||x_t|| / sqrt(D)`` over the images must lie within
    ``tol`` of N(0, I)'s (measured on at least 256 draws), and its spread within ``tol``
    too. N(0, I) as METHODS.md says, also for a model trained with offset noise: its
    prior's radius is sqrt(1 + offset^2) (1.005 at 0.1). The shipped model's inverted
    latents reach neither: 0.979 at t = 999 with one fixed-point iteration
    (``python -m benchmarks.methods_bcd --only b-radius``), so ``found`` is False there.
    """
    grid = timestep_grid(steps, denoiser.num_train_timesteps, "linspace")
    with torch.no_grad():
        traj = ddim_invert(denoiser, x0, grid, fixed_point_iters=refine, progress=progress)
    d = x0[0].numel()
    noise = torch.randn((max(256, x0.shape[0]), *x0.shape[1:]), generator=generator)
    ref = noise.reshape(noise.shape[0], -1).norm(dim=1) / math.sqrt(d)
    reference = (float(ref.mean()), float(ref.std()))
    radius: dict[int, tuple[float, float]] = {}
    for t, x in zip(grid, traj.xs, strict=True):
        r = x.reshape(x.shape[0], -1).norm(dim=1) / math.sqrt(d)
        radius[t] = (float(r.mean()), float(r.std()) if len(r) > 1 else 0.0)
    t0 = pick_mixing_step(radius, reference, tol)
    mean, std = radius[t0]
    found = abs(mean - reference[0]) <= tol and abs(std - reference[1]) <= tol
    return MixingSearch(t0=t0, radius=radius, reference=reference, found=found)


def pick_mixing_step(
    radius: dict[int, tuple[float, float]], reference: tuple[float, float], tol: float
) -> int:
    """The earliest t whose (mean, std) radius is within ``tol`` of the reference, from
    which on every later t stays within it too; the last t when none is."""
    steps = sorted(radius)
    close = [
        abs(radius[t][0] - reference[0]) <= tol and abs(radius[t][1] - reference[1]) <= tol
        for t in steps
    ]
    for i, t in enumerate(steps):
        if all(close[i:]):
            return t
    return steps[-1]


def invert_to(
    denoiser: Denoiser,
    x0: torch.Tensor,
    t0: int,
    steps: int,
    refine: int,
    progress: ProgressFn | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(x_t0, h at t0, grid): DDIM inversion on ``linspace(0, 1, steps) * t0``
    (``refine`` fixed-point iterations per step)."""
    grid = timestep_grid(steps, denoiser.num_train_timesteps, "linspace", t_max=t0)
    with torch.no_grad():
        traj = ddim_invert(denoiser, x0, grid, fixed_point_iters=refine, progress=progress)
        h = denoiser.down_mid(traj.x_T, grid[-1]).h.float()
    return traj.x_T, h, grid


def edit_across(
    denoiser: Denoiser,
    x_t0: torch.Tensor,
    grid: list[int],
    boundary: Boundary,
    d: float,
    *,
    h_boundary: Boundary | None = None,
    h_distance: float | None = None,
    eta: float = 1.0,
    generator: Generators = None,
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """Move x_t0 (and h at the first step) to signed distance d; denoise to x_0."""
    if tuple(boundary.normal.shape) != tuple(x_t0.shape[1:]):
        raise InputError(
            f"boundary: fitted on x of shape {tuple(boundary.normal.shape)}, "
            f"got {tuple(x_t0.shape[1:])}"
        )
    moved = boundary.move_to(x_t0, d)
    if h_boundary is None:
        return ddim_sample(denoiser, moved, grid, eta=eta, generator=generator, progress=progress)
    target = d if h_distance is None else h_distance
    top = grid[-1]

    def move_h(h: torch.Tensor, t: int) -> torch.Tensor:
        if t != top:
            return h
        return h_boundary.move_to(h, target).to(h.dtype)

    with denoiser.hooks.edit_h("boundary.first_step", move_h):
        return ddim_sample(denoiser, moved, grid, eta=eta, generator=generator, progress=progress)


@dataclass
class BoundaryAsset:
    """A boundary fit as stored: x_t0's and h's hyperplanes at t0 = grid[-1]."""

    model: str
    grid: list[int]  # the inversion grid to t0
    x: Boundary
    h: Boundary
    # the fit's images' median |signed distance| on x and on h: the unit an edit's
    # distance is best chosen in (None for assets from before they were stored)
    scale_x: float | None
    scale_h: float | None
    refine: int  # the fit's DDIM refinement (0 for assets from before it existed)

    def to_safetensors(self) -> bytes:
        meta = {
            "kind": "boundary",
            "model": self.model,
            "grid": json.dumps(self.grid),
            "offset_x": repr(self.x.offset),
            "offset_h": repr(self.h.offset),
            "refine": str(self.refine),
        }
        if self.scale_x is not None and self.scale_h is not None:
            meta.update(scale_x=repr(self.scale_x), scale_h=repr(self.scale_h))
        return pack({"normal_x": self.x.normal, "normal_h": self.h.normal}, meta)

    @classmethod
    def from_safetensors(cls, data: bytes) -> BoundaryAsset:
        tensors, meta = unpack(data, "boundary")
        nan = float("nan")
        scales = ("scale_x" in meta) and ("scale_h" in meta)
        return cls(
            model=meta.get("model", ""),
            grid=grid_of(meta),
            x=Boundary(tensors["normal_x"], float(meta["offset_x"]), nan, nan),
            h=Boundary(tensors["normal_h"], float(meta["offset_h"]), nan, nan),
            scale_x=float(meta["scale_x"]) if scales else None,
            scale_h=float(meta["scale_h"]) if scales else None,
            refine=int(meta.get("refine", "0")),
        )
