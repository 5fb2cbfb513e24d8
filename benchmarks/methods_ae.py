"""Methods A and E measured on the shipped unconditional model, the classifier as judge.

A (content injection): held-out pairs (content C, style S) that differ in every
factor; the share of outputs that keep C's content factors (shape, size,
position) and take S's style factors (colour, background), over the content
ratio g, t_edit, the skip-calibration strength w and the number of steps.

E (h-space directions):

- supervised: from N generated samples (eta = 1) labelled by the classifier,
  dh_t = mean(h_t | top-K for the value) - mean(h_t | bottom-K); applied to
  DDIM-inverted held-out images that lack the value; success (the factor takes
  the value) and preservation (every other factor unchanged) over the scale s;
- disentangle: the same, beside each direction with the other four targets'
  directions projected out (Haas et al.), rescaled to the raw direction's norm;
- labelled: the service's fit from labelled uploads (both sets inverted, difference
  of means), on twin pairs rendered by the generator that differ only in the target
  (so no other factor is confounded with it), raw and disentangled;
- conditioned: why an h direction recolours the object: position=top left fitted on
  twins of every colour vs twins that are all red, applied to red held-out objects;
- PCA: the top components of h over the same samples; for each, the share of
  edited samples in which each factor changes (which factor a component moves);
- locality: where in h each factor lives (on the object's cells, or one constant per
  channel), from twin pairs that differ only in it: why A cannot take the object's colour;
- hstats (an experiment outside METHODS.md): A with the style's per-channel h statistics
  put back into the injected h (AdaIN in h);
- Jacobian: directions of one held-out image, time per image, and how local the
  edit is (the share of the change that falls on the object).

    python -m benchmarks.methods_ae                      # everything (~25 min here)
    python -m benchmarks.methods_ae --only a --pairs 16  # one part, smaller
    python -m benchmarks.methods_ae --only disentangle --scales 0.5 1 2 4
    python -m benchmarks.methods_ae --only labelled --twins 128 --scales 1 2 4
    python -m benchmarks.methods_ae --only conditioned --twins 128 --scales 1 2
    python -m benchmarks.methods_ae --only locality --twins 64
    python -m benchmarks.methods_ae --only hstats --pairs 32
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks import model_domain, write_json
from contract.methods.inject import InjectParams
from worker.engine import Denoiser, ddim_invert, ddim_sample, ddpm_invert, load_denoiser
from worker.engine.classifier import AttributeClassifier
from worker.engine.hspace import inject as hspace_inject
from worker.engine.hspace import project_out, project_out_joint
from worker.engine.images import from_uint8
from worker.engine.methods import inject as inject_module
from worker.engine.methods.directions import (
    collect_h,
    edit_with_direction,
    jacobian_directions,
    pca_fit,
    supervised_directions,
)
from worker.engine.methods.inject import content_trajectory, inject_content
from worker.engine.schedule import timestep_grid
from worker.training import aligned

HELD_OUT_SEED = 3_100_000_000
# the model's generator (``use_domain``); the aligned domain's until main reads the model's
GEN: Any = aligned
FACTORS: dict[str, tuple[str, ...]] = aligned.FACTORS
CONTENT_FACTORS: tuple[str, ...] = aligned.CONTENT_FACTORS
STYLE_FACTORS: tuple[str, ...] = aligned.STYLE_FACTORS
FACTORS_LIST = list(FACTORS)
# E's target per factor: the value a direction moves an image towards
TARGET_VALUES = {
    "shape": "square",
    "size": "large",
    "position": "top left",
    "aspect": "tall",
    "colour": "red",
    "background": "white",
}
TARGETS = {f: TARGET_VALUES[f] for f in FACTORS}


def use_domain(gen: Any) -> None:
    """Measure on ``gen``'s factors (the generator the model was trained on)."""
    global GEN, FACTORS, CONTENT_FACTORS, STYLE_FACTORS, FACTORS_LIST, TARGETS
    GEN, FACTORS = gen, gen.FACTORS
    CONTENT_FACTORS, STYLE_FACTORS = gen.CONTENT_FACTORS, gen.STYLE_FACTORS
    FACTORS_LIST = list(FACTORS)
    TARGETS = {f: TARGET_VALUES[f] for f in FACTORS}


def _differing_pairs(
    count: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """(content, style) images whose labels differ in every factor, and both label arrays."""
    rng = np.random.default_rng(seed)
    c_img, s_img, c_lab, s_lab = [], [], [], []
    for _ in range(count):
        a = [int(rng.integers(len(v))) for v in FACTORS.values()]
        b = [
            (x + 1 + int(rng.integers(len(v) - 1))) % len(v)
            for x, v in zip(a, FACTORS.values(), strict=True)
        ]
        c_img.append(GEN.render(GEN.Labels(*a), rng))
        s_img.append(GEN.render(GEN.Labels(*b), rng))
        c_lab.append(GEN.Labels(*a))
        s_lab.append(GEN.Labels(*b))
    return (
        from_uint8(np.stack(c_img)),
        from_uint8(np.stack(s_img)),
        GEN.label_array(c_lab),
        GEN.label_array(s_lab),
    )


def _judge(clf: AttributeClassifier, images: torch.Tensor) -> np.ndarray:
    pred = clf.predict(images.clamp(-1, 1))
    return np.stack([pred[name][0].numpy() for name in FACTORS], axis=1)


# --------------------------------------------------------------------------- A
def keeps_and_takes(
    pred: np.ndarray, c_lab: np.ndarray, s_lab: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per pair: the output keeps every content factor of the content image / takes every
    style factor of the style image (labels in ``FACTORS`` order)."""
    cols = list(FACTORS)
    keeps = np.all([pred[:, cols.index(f)] == c_lab[:, cols.index(f)] for f in CONTENT_FACTORS], 0)
    takes = np.all([pred[:, cols.index(f)] == s_lab[:, cols.index(f)] for f in STYLE_FACTORS], 0)
    return keeps, takes


def _inject_scores(pred: np.ndarray, c_lab: np.ndarray, s_lab: np.ndarray) -> dict[str, float]:
    """A's figures: the share keeping each content factor, taking each style factor, all."""
    cols = list(FACTORS)
    out: dict[str, float] = {}
    for f in CONTENT_FACTORS:
        out[f"keeps_{f}"] = round(
            float((pred[:, cols.index(f)] == c_lab[:, cols.index(f)]).mean()), 3
        )
    for f in STYLE_FACTORS:
        out[f"takes_{f}"] = round(
            float((pred[:, cols.index(f)] == s_lab[:, cols.index(f)]).mean()), 3
        )
    content_ok, style_ok = keeps_and_takes(pred, c_lab, s_lab)
    out["keeps_all_content"] = round(float(content_ok.mean()), 3)
    out["takes_all_style"] = round(float(style_ok.mean()), 3)
    out["both"] = round(float((content_ok & style_ok).mean()), 3)
    return out


def _inject_mask(kind: str | None, content: torch.Tensor, cells: int) -> torch.Tensor | None:
    """A's local injection in the benchmark: ``"content"`` injects only on the h cells
    the content image's object touches (what a user would draw), the rest keeps S's h."""
    if kind is None:
        return None
    if kind != "content":
        raise ValueError(f"mask: expected 'content', got {kind!r}")
    pixels = ((content + 1) * 127.5).round().permute(0, 2, 3, 1).numpy()
    return torch.from_numpy(_object_cells(pixels, cells)).float()[:, None]


def eval_inject(
    dn: Denoiser, clf: AttributeClassifier, pairs: int, configs: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    content, style, c_lab, s_lab = _differing_pairs(pairs, HELD_OUT_SEED)
    rows = []
    for cfg in configs:
        steps = int(cfg.get("steps", 50))
        refine = int(cfg.get("refine", 1))
        settings = InjectParams(
            **{k: v for k, v in cfg.items() if k not in ("steps", "refine", "mask")}
        )
        grid = timestep_grid(steps, dn.num_train_timesteps, "linspace")
        start = time.perf_counter()
        with torch.no_grad():
            traj = content_trajectory(dn, content, grid, refine=refine)
            x_T = ddim_invert(dn, style, grid, fixed_point_iters=refine).x_T
            gens = [torch.Generator().manual_seed(i) for i in range(pairs)]
            mask = _inject_mask(cfg.get("mask"), content, traj.h[grid[0]].shape[-1])
            out = inject_content(dn, x_T, traj, settings, mask=mask, generator=gens)
        seconds = time.perf_counter() - start
        row: dict[str, Any] = {"config": {"steps": steps, "refine": refine, **cfg}}
        row.update(_inject_scores(_judge(clf, out), c_lab, s_lab))
        row["s_per_pair"] = round(seconds / pairs, 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def default_inject_configs() -> list[dict[str, Any]]:
    base: dict[str, Any] = {}
    # g = 0 injects nothing: the style image's own round trip, the ceiling for "takes style"
    configs: list[dict[str, Any]] = [{"g": 0.0}, base]
    configs += [{"g": g} for g in (0.6, 1.0)]
    configs += [{"t_edit": t} for t in (200, 600)]
    configs += [{"w": w} for w in (1.0, 3.0)]
    configs += [{"g": 1.0, "t_edit": 0, "w": 1.0}, {"g": 1.0, "t_edit": 0}]
    # x0_hat of the edited eps clamped to the image range (a small U-Net's runs away)
    configs += [{"clip_x0": True, "g": g} for g in (0.3, 0.6, 1.0)]
    configs += [{"clip_x0": True, "g": 1.0, "t_edit": 0}]
    configs += [{"steps": s} for s in (20, 100, 1000)]
    return configs


# --------------------------------------------------------------------------- E


def _generated_h(
    dn: Denoiser, clf: AttributeClassifier, count: int, grid: list[int]
) -> tuple[dict[int, torch.Tensor], dict[str, tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    hs: dict[int, list[torch.Tensor]] = {}
    outs = []
    for start in range(0, count, 64):
        n = min(64, count - start)
        x_T = dn.noise((n, *dn.sample_shape), gen)
        h, x0 = collect_h(dn, x_T, grid, eta=1.0, generator=gen)
        for t, v in h.items():
            hs.setdefault(t, []).append(v.float())
        outs.append(x0)
    images = torch.cat(outs)
    return {t: torch.cat(v) for t, v in hs.items()}, clf.predict(images.clamp(-1, 1)), images


def _supervised_targets(
    clf_pred: dict[str, tuple[torch.Tensor, torch.Tensor]],
    h: dict[int, torch.Tensor],
    grid: list[int],
    top_k: int,
) -> dict[str, tuple[dict[int, torch.Tensor], int, int]]:
    """Per target, dh_t = mean(h_t | top-K by P(value)) - mean(h_t | bottom-K), and the counts."""
    out = {}
    for factor, value in TARGETS.items():
        v = FACTORS[factor].index(value)
        cls, conf = clf_pred[factor]
        score = torch.where(cls == v, conf, 1 - conf)
        order = torch.argsort(score, descending=True)
        pos, neg = order[:top_k], order[-top_k:]
        pos = pos[cls[pos] == v]
        neg = neg[cls[neg] != v]
        dirs = supervised_directions({t: h[t][pos] for t in grid}, {t: h[t][neg] for t in grid})
        out[f"{factor}={value}"] = (dirs, len(pos), len(neg))
    return out


def _twin_images(
    factor: str, value: str, pairs: int, seed: int, fixed: dict[str, str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``pairs`` (positive, negative) images equal in every factor and the jitter but
    ``factor``, which is ``value`` in the positive and another value in the negative;
    the factors in ``fixed`` take the given value in every pair."""
    rng = np.random.default_rng(seed)
    j, v = FACTORS_LIST.index(factor), FACTORS[factor].index(value)
    pos, neg = [], []
    for _ in range(pairs):
        values = [int(rng.integers(len(vals))) for vals in FACTORS.values()]
        for name, val in (fixed or {}).items():
            values[FACTORS_LIST.index(name)] = FACTORS[name].index(val)
        others = [k for k in range(len(FACTORS[factor])) if k != v]
        values[j] = others[int(rng.integers(len(others)))]
        twin = list(values)
        twin[j] = v
        jitter = int(rng.integers(2**31))
        neg.append(GEN.render(GEN.Labels(*values), np.random.default_rng(jitter)))
        pos.append(GEN.render(GEN.Labels(*twin), np.random.default_rng(jitter)))
    return np.stack(pos), np.stack(neg)


def _labelled_targets(
    dn: Denoiser, grid: list[int], pairs: int, refine: int
) -> dict[str, tuple[dict[int, torch.Tensor], int, int]]:
    """Per target, the service's labelled-upload fit (both sets inverted, h recorded at
    every step, difference of means) on ``pairs`` twin pairs that differ only in the target."""
    out = {}
    for i, (factor, value) in enumerate(TARGETS.items()):
        start = time.perf_counter()
        pos_img, neg_img = _twin_images(factor, value, pairs, seed=HELD_OUT_SEED + 10 + i)
        hs = []
        for imgs in (pos_img, neg_img):
            chunks = [
                content_trajectory(dn, from_uint8(imgs[k : k + 64]), grid, refine=refine).h
                for k in range(0, len(imgs), 64)
            ]
            hs.append({t: torch.cat([c[t].float() for c in chunks]) for t in grid})
        dirs = supervised_directions(hs[0], hs[1])
        print(f"labelled {factor}={value}: {pairs} twin pairs inverted and fitted in "
              f"{time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip
        out[f"{factor}={value}"] = (dirs, pairs, pairs)
    return out


def eval_conditioned(
    dn: Denoiser,
    clf: AttributeClassifier,
    grid: list[int],
    pairs: int,
    count: int,
    scales: list[float],
    refine: int,
) -> list[dict[str, Any]]:
    """Why h directions change the object's colour: position=top left fitted on twins of
    every colour vs twins that are all red, both applied to held-out red objects. If the
    side effect comes from the direction averaging over colours, the red-only one keeps
    red more often."""
    if "position" not in FACTORS:
        raise SystemExit("--only conditioned: the model's domain has no position factor")

    def fit(fixed: dict[str, str] | None, seed: int) -> dict[int, torch.Tensor]:
        pos, neg = _twin_images("position", "top left", pairs, seed, fixed)
        h = [content_trajectory(dn, from_uint8(x), grid, refine=refine).h for x in (pos, neg)]
        return supervised_directions(h[0], h[1])

    j, v = FACTORS_LIST.index("position"), FACTORS["position"].index("top left")
    c = FACTORS_LIST.index("colour")
    images, labels = GEN.generate(HELD_OUT_SEED + 1, 16 * count)
    y_all = GEN.label_array(labels)
    pick = np.flatnonzero((y_all[:, j] != v) & (y_all[:, c] == FACTORS["colour"].index("red")))
    pick = pick[:count]
    with torch.no_grad():
        x_T = ddim_invert(dn, from_uint8(images[pick]), grid, fixed_point_iters=refine).x_T
    table = []
    for name, fixed, seed in (("every colour", None, 21), ("red only", {"colour": "red"}, 22)):
        rows = _edit_rows(dn, clf, x_T, y_all[pick], grid, fit(fixed, seed), j, v, scales, 0)
        table.append({"twins": name, "images": len(pick), "rows": rows})
        print(f"conditioned position=top left, twins {name}:", json.dumps(rows), flush=True)
    return table


def _disentangled(
    targets: dict[str, tuple[dict[int, torch.Tensor], int, int]], key: str, solve: str = "per_step"
) -> dict[int, torch.Tensor]:
    """``key``'s directions with every other target's projected out (Haas et al.): at each
    step (``per_step``) or in one solve over all steps flattened (``joint``, the reference's)."""
    dirs = targets[key][0]
    others = {t: torch.stack([o[0][t] for k, o in targets.items() if k != key]) for t in dirs}
    if solve == "joint":
        joint = project_out_joint({t: d.unsqueeze(0) for t, d in dirs.items()}, others)
        return {t: d[0] for t, d in joint.items()}
    return {t: project_out(d, others[t]) for t, d in dirs.items()}


def _edit_rows(
    dn: Denoiser,
    clf: AttributeClassifier,
    x_T: torch.Tensor,
    y: np.ndarray,
    grid: list[int],
    dirs: dict[int, torch.Tensor],
    j: int,
    v: int,
    scales: list[float],
    t_edit: int,
    noises: list[torch.Tensor] | None = None,
) -> list[dict[str, Any]]:
    """Success (factor j takes value v) and preservation (every other factor kept) per
    scale; ``noises`` replay an edit-friendly inversion (eta 1)."""
    others = [k for k in range(len(FACTORS)) if k != j]
    rows: list[dict[str, Any]] = []
    eta = 0.0 if noises is None else 1.0
    for s in scales:
        with torch.no_grad():
            out = edit_with_direction(dn, x_T, grid, dirs, s, t_edit=t_edit, eta=eta, noises=noises)
        p = _judge(clf, out)
        success = float((p[:, j] == v).mean())
        kept = float(np.all(p[:, others] == y[:, others], axis=1).mean())
        # which other factors the edit broke: where preservation is lost
        broke = {FACTORS_LIST[k]: round(float((p[:, k] != y[:, k]).mean()), 3) for k in others}
        rows.append(
            {"s": s, "success": round(success, 3), "preservation": round(kept, 3), "changed": broke}
        )
    return rows


def eval_supervised(
    dn: Denoiser,
    clf: AttributeClassifier,
    targets: dict[str, tuple[dict[int, torch.Tensor], int, int]],
    grid: list[int],
    count: int,
    scales: list[float],
    t_edit: int,
    refine: int = 1,
    disentangle: bool = False,
    source: str = "supervised",
    inversion: str = "ddim",
) -> dict[str, Any]:
    """Each target's direction on held-out images that lack the value; with ``disentangle``,
    also the direction with the other four targets' directions projected out, at the same
    norm as the raw one (so a scale means the same step length in both rows)."""
    cols = list(FACTORS)
    results: dict[str, Any] = {}
    images, labels = GEN.generate(HELD_OUT_SEED + 1, 4 * count)
    y_all = GEN.label_array(labels)
    for factor, value in TARGETS.items():
        key = f"{factor}={value}"
        j, v = cols.index(factor), FACTORS[factor].index(value)
        dirs, n_pos, n_neg = targets[key]
        pick = np.flatnonzero(y_all[:, j] != v)[:count]
        x0 = from_uint8(images[pick])
        y = y_all[pick]
        noises = None
        with torch.no_grad():
            if inversion == "ddpm":  # edit-friendly, the reference's for real images
                maps = ddpm_invert(dn, x0, grid, generator=torch.Generator().manual_seed(0))
                x_T, noises = maps.x_T, maps.zs
            else:
                x_T = ddim_invert(dn, x0, grid, fixed_point_iters=refine).x_T
        entry: dict[str, Any] = {"positives": n_pos, "negatives": n_neg, "inversion": inversion}
        entry["rows"] = _edit_rows(dn, clf, x_T, y, grid, dirs, j, v, scales, t_edit, noises)
        print(f"{source} {key}:", json.dumps(entry["rows"]), flush=True)
        if disentangle:
            clean = _disentangled(targets, key)
            clean = {t: d * (dirs[t].norm() / d.norm().clamp_min(1e-12)) for t, d in clean.items()}
            cos = float(
                np.mean(
                    [
                        F.cosine_similarity(clean[t].flatten(), d.flatten(), 0)
                        for t, d in dirs.items()
                    ]
                )
            )
            entry["disentangled_cos_to_raw"] = round(cos, 3)
            entry["disentangled"] = _edit_rows(
                dn, clf, x_T, y, grid, clean, j, v, scales, t_edit, noises
            )
            rows = json.dumps(entry["disentangled"])
            print(f"{source} disentangled {key} (cos {cos:.2f}):", rows, flush=True)
            joint = _disentangled(targets, key, "joint")
            joint = {t: d * (dirs[t].norm() / d.norm().clamp_min(1e-12)) for t, d in joint.items()}
            entry["disentangled_joint"] = _edit_rows(
                dn, clf, x_T, y, grid, joint, j, v, scales, t_edit, noises
            )
            rows = json.dumps(entry["disentangled_joint"])
            print(f"{source} disentangled jointly {key}:", rows, flush=True)
        results[key] = entry
    return results


def eval_pca(
    dn: Denoiser,
    clf: AttributeClassifier,
    h: dict[int, torch.Tensor],
    grid: list[int],
    k: int,
    count: int,
    scale: float,
) -> list[dict[str, Any]]:
    dirs, _ = pca_fit(h, k)
    gen = torch.Generator().manual_seed(11)
    x_T = dn.noise((count, *dn.sample_shape), gen)
    with torch.no_grad():
        base = _judge(clf, ddim_sample(dn, x_T, grid))
    table = []
    for c in range(k):
        row: dict[str, Any] = {"component": c}
        for sign in (1, -1):
            comp = {t: d[c] for t, d in dirs.items()}
            with torch.no_grad():
                out = edit_with_direction(dn, x_T, grid, comp, sign * scale)
            p = _judge(clf, out)
            row[f"{'+' if sign > 0 else '-'}{scale:g}"] = {
                f: round(float((p[:, i] != base[:, i]).mean()), 3) for i, f in enumerate(FACTORS)
            }
        table.append(row)
        print("pca:", json.dumps(row), flush=True)
    return table


def eval_jacobian(
    dn: Denoiser, steps: int, k: int, iters: int, images: int, scale: float, refine: int = 1
) -> dict[str, Any]:
    imgs, labels = GEN.generate(HELD_OUT_SEED + 2, images)
    grid = timestep_grid(steps, dn.num_train_timesteps)
    x0 = from_uint8(imgs)
    per_image, locality, change = [], [], []
    for i in range(images):
        with torch.no_grad():
            traj = ddim_invert(dn, x0[i : i + 1], grid, fixed_point_iters=refine)
        start = time.perf_counter()
        dirs: dict[int, torch.Tensor] = {}
        xs = dict(zip(grid, traj.xs, strict=True))  # x at each grid step, as sampling sees it
        for t in grid:
            u, sigma = jacobian_directions(
                dn, xs[t], t, k=k, iters=iters, generator=torch.Generator().manual_seed(0)
            )
            dirs[t] = u[0] * sigma[0]
        per_image.append(time.perf_counter() - start)
        with torch.no_grad():
            plain = ddim_sample(dn, traj.x_T, grid)
            edited = edit_with_direction(
                dn, traj.x_T, grid, dirs, scale / float(max(d.norm() for d in dirs.values()))
            )
        diff = (edited - plain).abs().sum(1)[0]
        bg = (
            torch.tensor(list(GEN.BACKGROUNDS.values())[labels[i].background], dtype=torch.float32)
            / 127.5
            - 1
        )
        obj = (x0[i] - bg.view(3, 1, 1)).abs().sum(0) > 0.3
        grown = torch.nn.functional.max_pool2d(obj[None, None].float(), 5, 1, 2)[0, 0] > 0
        locality.append(
            float(diff[grown].sum() / diff.sum().clamp_min(1e-8)) / float(grown.float().mean())
        )
        change.append(float(diff.mean()))
    return {
        "steps": steps,
        "k": k,
        "iters": iters,
        "images": images,
        "refine": refine,
        "s_per_image": round(float(np.mean(per_image)), 1),
        "s_per_step": round(float(np.mean(per_image)) / steps, 2),
        "mean_abs_change": round(float(np.mean(change)), 3),
        "change_on_object_vs_area_share": round(float(np.mean(locality)), 2),
    }


def _object_cells(images: np.ndarray, cells: int) -> np.ndarray:
    """(N, cells, cells) bool: the h cells an image's object touches (a pixel off the
    background colour, read at the corner, which no object reaches)."""
    x = images.astype(np.float32)
    off = np.abs(x - x[:, :1, :1, :]).max(axis=-1) > 30
    n, size = off.shape[0], off.shape[1]
    k = size // cells
    return np.asarray(off.reshape(n, cells, k, cells, k).any(axis=(2, 4)))


def eval_locality(
    dn: Denoiser, grid: list[int], pairs: int, refine: int, at: tuple[float, ...]
) -> list[dict[str, Any]]:
    """Where in h a factor lives. Twin pairs that differ only in the factor are inverted;
    d = h(twin) - h(original) at a few grid steps. Per factor and step: ||d|| / ||h||
    (how much h carries it); the share of ||d||^2 that is one constant per channel (all a
    channel-statistics swap such as AdaIN could move); the share of ||d||^2 on the cells
    the objects touch, beside those cells' share of h's area."""
    rows = []
    for seed, factor in enumerate(FACTORS_LIST):
        value = FACTORS[factor][0]
        pos, neg = _twin_images(factor, value, pairs, 500 + seed)
        h_pos = content_trajectory(dn, from_uint8(pos), grid, refine=refine).h
        h_neg = content_trajectory(dn, from_uint8(neg), grid, refine=refine).h
        for frac in at:
            t = grid[round(frac * (len(grid) - 1))]
            d, h = (h_pos[t] - h_neg[t]).double(), h_neg[t].double()
            cells = d.shape[-1]
            mask = torch.from_numpy(_object_cells(pos, cells) | _object_cells(neg, cells))
            energy = (d**2).sum(1)  # (N, cells, cells)
            total = energy.sum((1, 2))
            constant = (d.mean((2, 3)) ** 2).sum(1) * cells * cells
            on_object = (energy * mask).sum((1, 2))
            row = {
                "factor": factor,
                "twin value": value,
                "t": t,
                "d / h": round(
                    float((d.flatten(1).norm(dim=1) / h.flatten(1).norm(dim=1)).mean()), 3
                ),
                "per-channel constant": round(float((constant / total).mean()), 3),
                "on object cells": round(float((on_object / total).mean()), 3),
                "object cells' area": round(float(mask.double().mean((1, 2)).mean()), 3),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def _with_style_stats(mode: str, style_h: dict[int, torch.Tensor], grid: list[int]) -> Any:
    """hspace.inject, then the style's per-channel h statistics put back (see eval_hstats)."""
    order = iter(sorted(grid, reverse=True))  # t_edit 0: one injection per step

    def patched(
        h: torch.Tensor,
        h_c: torch.Tensor,
        g: float,
        mask: torch.Tensor | None = None,
        masked_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        t = next(order)
        out = hspace_inject(h, h_c, g, mask, masked_rows)
        if mode == "plain":
            return out
        ref = style_h[t].to(out)
        mu, mu_o = ref.mean((2, 3), keepdim=True), out.mean((2, 3), keepdim=True)
        if mode == "style mean":
            return out - mu_o + mu
        sd, sd_o = ref.std((2, 3), keepdim=True), out.std((2, 3), keepdim=True)
        return (out - mu_o) / sd_o.clamp_min(1e-6) * sd + mu

    return patched


def eval_hstats(
    dn: Denoiser, clf: AttributeClassifier, pairs: int, steps: int, refine: int
) -> list[dict[str, Any]]:
    """An experiment outside METHODS.md: is the style's colour in h's channel statistics?
    A at g 1, t_edit 0, clip_x0, then the injected h given the style's own (inverted) h's
    per-channel mean, or mean and std (AdaIN in h), at each step. If colour were one
    constant per channel, this would take the style's colour and keep the content."""
    content, style, c_lab, s_lab = _differing_pairs(pairs, HELD_OUT_SEED)
    grid = timestep_grid(steps, dn.num_train_timesteps, "linspace")
    with torch.no_grad():
        c_traj = content_trajectory(dn, content, grid, refine=refine)
        s_traj = content_trajectory(dn, style, grid, refine=refine)
    assert s_traj.x_T is not None
    settings = InjectParams(g=1.0, t_edit=0, clip_x0=True)
    rows = []
    for mode in ("plain", "style mean", "style mean and std"):
        patched = _with_style_stats(mode, s_traj.h, grid)
        gens = [torch.Generator().manual_seed(i) for i in range(pairs)]
        with torch.no_grad(), mock.patch.object(inject_module, "inject", patched):
            out = inject_content(dn, s_traj.x_T, c_traj, settings, generator=gens)
        row: dict[str, Any] = {"h statistics": mode, "steps": steps}
        row.update(_inject_scores(_judge(clf, out), c_lab, s_lab))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="models/shapes32-ddpm")
    p.add_argument("--classifier", default="models/shapes32-classifier")
    p.add_argument(
        "--only",
        nargs="+",
        choices=[
            "a",
            "supervised",
            "disentangle",
            "labelled",
            "conditioned",
            "pca",
            "jacobian",
            "locality",
            "hstats",
        ],
        default=["a", "supervised", "pca", "jacobian"],
    )
    p.add_argument("--pairs", type=int, default=32)
    p.add_argument("--configs", help="A: a JSON list of configs instead of the default sweep")
    p.add_argument(
        "--samples", type=int, default=512, help="generated samples for PCA / supervised"
    )
    p.add_argument(
        "--twins", type=int, default=128, help="E labelled: twin pairs per target direction"
    )
    p.add_argument("--edit-steps", type=int, default=25)
    p.add_argument("--count", type=int, default=32, help="held-out images per E edit")
    p.add_argument(
        "--refine", type=int, default=1, help="fixed-point iterations per DDIM inversion step"
    )
    p.add_argument(
        "--scales", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0, 4.0, 8.0],
        help="E supervised: edit scales s",
    )  # fmt: skip
    p.add_argument(
        "--e-t-edit", type=int, default=0, help="E supervised: edit only steps with t >= this"
    )
    p.add_argument("--inversions", nargs="+", choices=["ddim", "ddpm"], default=["ddim"],
                   help="E supervised: how held-out images are inverted, side by side")  # fmt: skip
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--json", dest="json_out")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    use_domain(model_domain(args.model))
    dn = load_denoiser(args.model, device="cpu", dtype="float32")
    clf = AttributeClassifier.load(args.classifier)
    results: dict[str, Any] = {}
    if "a" in args.only:
        configs = json.loads(args.configs) if args.configs else default_inject_configs()
        results["inject"] = eval_inject(dn, clf, args.pairs, configs)
    grid = timestep_grid(args.edit_steps, dn.num_train_timesteps)
    if {"supervised", "disentangle", "pca"} & set(args.only):
        start = time.perf_counter()
        h, pred, _ = _generated_h(dn, clf, args.samples, grid)
        print(f"collected h of {args.samples} samples in {time.perf_counter() - start:.0f} s")
        if "supervised" in args.only or "disentangle" in args.only:
            targets = _supervised_targets(pred, h, grid, top_k=args.samples // 8)
            for inversion in args.inversions:
                key = "supervised" if inversion == "ddim" else f"supervised_{inversion}"
                results[key] = eval_supervised(
                    dn, clf, targets, grid, args.count, scales=args.scales,
                    t_edit=args.e_t_edit, refine=args.refine,
                    disentangle="disentangle" in args.only, inversion=inversion,
                )  # fmt: skip
        if "pca" in args.only:
            results["pca"] = eval_pca(dn, clf, h, grid, k=5, count=args.count, scale=5.0)
    if "conditioned" in args.only:
        results["conditioned"] = eval_conditioned(
            dn, clf, grid, args.twins, args.count, args.scales, args.refine
        )
    if "labelled" in args.only:
        targets = _labelled_targets(dn, grid, args.twins, args.refine)
        results["labelled"] = eval_supervised(
            dn, clf, targets, grid, args.count, scales=args.scales, t_edit=args.e_t_edit,
            refine=args.refine, disentangle=True, source="labelled",
        )  # fmt: skip
    if "hstats" in args.only:
        results["hstats"] = eval_hstats(dn, clf, args.pairs, 20, args.refine)
    if "locality" in args.only:
        results["locality"] = eval_locality(dn, grid, args.twins, args.refine, (1.0, 0.5, 0.1))
    if "jacobian" in args.only:
        results["jacobian"] = eval_jacobian(
            dn, steps=10, k=3, iters=50, images=2, scale=50.0, refine=args.refine
        )
        print("jacobian:", json.dumps(results["jacobian"]))
    write_json(args.json_out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
