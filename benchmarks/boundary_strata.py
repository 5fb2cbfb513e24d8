"""B experiment: one global boundary against one boundary per stratum, at a fixed t0.

E's supervised directions improved when conditioned on the other content factors
(one mean difference per combination of their values). Does the same help B's
boundaries? For each target factor, labelled generator images are drawn per
stratum (a combination of the ``--condition-on`` factors' values, the target's own
factor left out): 16 with the target value and 16 without. Their x_t0 (DDIM
inversion, 40 steps, to ``--t0``) fits one global SVM and one SVM per stratum.
Held-out images lacking the value, spread over the strata, are moved across the
global boundary, then across their own stratum's, by ``--strength`` times the
global fit's median |distance|, and resampled with eta 1 (x moved only). The
classifier judges each output: success (takes the value), preservation (keeps
every other factor), in distribution (valid and confident > 0.9 on every factor).

    python -m benchmarks.boundary_strata --t0 300 --strength 4 --factors size shape \
        --condition-on colour background
"""

from __future__ import annotations

import argparse
import itertools
import json
from typing import Any

import numpy as np
import torch

from benchmarks.defaults import judge_tensor
from worker.engine import load_denoiser
from worker.engine.classifier import AttributeClassifier
from worker.engine.images import from_uint8
from worker.engine.methods.boundaries import edit_across, fit_boundary, invert_to
from worker.training import aligned as gen

TARGETS = {"shape": "square", "size": "large", "aspect": "tall", "colour": "red",
           "background": "white"}  # fmt: skip
PER_CLASS = 16  # fit images per stratum and class
HELD_OUT = 24  # edited images per target, at least 2 per stratum


def _to_x(images: np.ndarray) -> torch.Tensor:
    return from_uint8(images)


def run_target(
    factor: str,
    condition_on: list[str],
    t0: int,
    strength: float,
    data: dict[str, Any],
) -> dict[str, Any]:
    dn, clf = data["denoiser"], data["classifier"]
    imgs, y, held, hy = data["fit_images"], data["fit_labels"], data["held"], data["held_labels"]
    cols = list(gen.FACTORS)
    j, v = cols.index(factor), gen.FACTORS[factor].index(TARGETS[factor])
    cond = [c for c in condition_on if c != factor]
    ci = [cols.index(c) for c in cond]
    strata = list(itertools.product(*(range(len(gen.FACTORS[c])) for c in cond)))
    fit_idx = {}
    for s in strata:
        m = np.all(y[:, ci] == s, 1)
        fit_idx[s] = (
            np.flatnonzero(m & (y[:, j] == v))[:PER_CLASS],
            np.flatnonzero(m & (y[:, j] != v))[:PER_CLASS],
        )
    order = np.concatenate([np.concatenate(pn) for pn in fit_idx.values()])
    x_t0, _, _ = invert_to(dn, _to_x(imgs[order]), t0, 40, 0)
    lab = torch.from_numpy((y[order, j] == v).astype(np.int64))
    global_b = fit_boundary(x_t0, lab, held_out=0.2)
    per, off = {}, 0
    for s, (p, n) in fit_idx.items():
        k = len(p) + len(n)
        per[s] = fit_boundary(x_t0[off : off + k], lab[off : off + k], held_out=0.0)
        off += k
    scale = float(global_b.distance(x_t0).abs().median())
    pick_list: list[int] = []
    for s in strata:
        m = np.all(hy[:, ci] == s, 1) & (hy[:, j] != v)
        pick_list += list(np.flatnonzero(m)[: max(2, HELD_OUT // len(strata))])
    pick = np.array(pick_list)
    hx_t0, _, grid = invert_to(dn, _to_x(held[pick]), t0, 40, 0)
    others = [k for k in range(len(cols)) if k != j]
    row: dict[str, Any] = {}
    for mode in ("global", "conditioned"):
        outs = []
        for i in range(len(pick)):
            b = global_b if mode == "global" else per[tuple(hy[pick[i], ci])]
            out = edit_across(dn, hx_t0[i : i + 1], grid, b, strength * scale, eta=1.0,
                              generator=torch.Generator().manual_seed(i))  # fmt: skip
            outs.append(dn.decode(out))
        lab_o, ok = judge_tensor(clf, cols, torch.cat(outs))
        succ = lab_o[:, j] == v
        kept = np.all(lab_o[:, others] == hy[pick][:, others], 1)
        row[mode] = {
            "n": len(pick),
            "success": round(float(succ.mean()), 3),
            "preservation": round(float(kept.mean()), 3),
            "both": round(float((succ & kept).mean()), 3),
            "in_distribution": round(float(ok.mean()), 3),
        }
    row["global_balanced_accuracy"] = round(global_b.balanced_accuracy, 3)
    row["strata"] = len(strata)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/shapes32-ddpm")
    ap.add_argument("--classifier", default="models/shapes32-classifier")
    ap.add_argument("--t0", type=int, default=500)
    ap.add_argument("--strength", type=float, default=2.0)
    ap.add_argument("--factors", nargs="+", default=["size", "shape", "aspect"],
                    choices=list(TARGETS))  # fmt: skip
    ap.add_argument("--condition-on", nargs="+", default=["shape", "size", "aspect"],
                    choices=list(gen.FACTORS))  # fmt: skip
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    imgs, labs = gen.generate(4_100_000_000, 1600)  # seeds apart from the training data's
    held, held_labs = gen.generate(4_200_000_000, 400)
    data = {
        "denoiser": load_denoiser(args.model, name="model", device="cpu", dtype="float32"),
        "classifier": AttributeClassifier.load(args.classifier),
        "fit_images": imgs,
        "fit_labels": gen.label_array(labs),
        "held": held,
        "held_labels": gen.label_array(held_labs),
    }
    for factor in args.factors:
        row = run_target(factor, args.condition_on, args.t0, args.strength, data)
        print(json.dumps({"target": f"{factor}={TARGETS[factor]}", "t0": args.t0,
                          "strength": args.strength, **row}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
