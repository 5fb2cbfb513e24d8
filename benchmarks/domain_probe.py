"""Does a model's h carry the layout and its skips the look? The two swap tests.

For twin pairs (A, B) equal in every factor but one, both DDIM-inverted, A is
regenerated from its own x_T while its h is replaced at every step by B's:

- content swap (B differs from A in a content factor): the share of outputs whose
  factor follows h (takes B's value). High means h carries the content.
- style swap (B differs in a style factor): the share whose style factor does NOT
  follow h (keeps A's value: it stays with the trajectory and the skips). High means
  the look is outside h.

A model fits methods A, B and E when both are high. Every output is also judged
valid or not by the classifier's ``valid`` head where it has one, and the sample
quality (share of samples confident on every factor) is reported beside.

    python -m benchmarks.domain_probe --model var/probe/cut2 \
        --classifier var/probe/classifier-aligned --domain aligned --pairs 32
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
import torch

from benchmarks import write_json
from worker.engine import ddim_invert, ddim_sample, load_denoiser
from worker.engine.classifier import AttributeClassifier
from worker.engine.denoiser import Denoiser
from worker.engine.images import from_uint8
from worker.engine.schedule import timestep_grid
from worker.training.domains import domain


def valid_share(clf: AttributeClassifier, images: torch.Tensor) -> float | None:
    pred = clf.predict(images.clamp(-1, 1))
    if "valid" not in pred:
        return None
    idx, prob = pred["valid"]
    return float(((idx == 1) & (prob > 0.9)).float().mean())


def swap_row(
    dn: Denoiser,
    clf: AttributeClassifier,
    gen: Any,
    factor: str,
    pairs: int,
    steps: int,
    refine: int,
    seed: int,
) -> dict[str, Any]:
    grid = timestep_grid(steps, dn.num_train_timesteps)
    a_imgs, b_imgs, a_labels, b_labels = gen.twins(factor, pairs, seed)
    with torch.no_grad():
        xa_T = ddim_invert(dn, from_uint8(a_imgs), grid, fixed_point_iters=refine).x_T
        xb_T = ddim_invert(dn, from_uint8(b_imgs), grid, fixed_point_iters=refine).x_T
        with dn.hooks.capture_h("probe.record") as cap:
            ddim_sample(dn, xb_T, grid)
        with dn.hooks.edit_h("probe.replace", lambda h, t: cap.at(t).to(h.dtype)):
            out = ddim_sample(dn, xa_T, grid)
    pred = clf.predict(out.clamp(-1, 1))
    column = list(gen.FACTORS).index(factor)
    a_val = torch.from_numpy(gen.label_array(a_labels))[:, column]
    b_val = torch.from_numpy(gen.label_array(b_labels))[:, column]
    got = pred[factor][0]
    content = factor in gen.CONTENT_FACTORS
    score = (got == b_val) if content else (got == a_val)
    return {
        "factor": factor,
        "test": "content: follows h" if content else "style: stays off h",
        "share": round(float(score.float().mean()), 3),
        "valid": valid_share(clf, out),
    }


def differing_pairs(gen: Any, count: int, seed: int) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """(content, style) images whose labels differ in every factor, and both label arrays."""
    rng = np.random.default_rng(seed)
    c_img, s_img, c_lab, s_lab = [], [], [], []
    for _ in range(count):
        a = [int(rng.integers(len(v))) for v in gen.FACTORS.values()]
        b = [(x + 1 + int(rng.integers(len(v) - 1))) % len(v)
             for x, v in zip(a, gen.FACTORS.values(), strict=True)]  # fmt: skip
        c_lab.append(gen.Labels(*a))
        s_lab.append(gen.Labels(*b))
        c_img.append(gen.render(c_lab[-1], rng))
        s_img.append(gen.render(s_lab[-1], rng))
    return (from_uint8(np.stack(c_img)), from_uint8(np.stack(s_img)),
            gen.label_array(c_lab), gen.label_array(s_lab))  # fmt: skip


def inject_row(
    dn: Denoiser, clf: AttributeClassifier, gen: Any, pairs: int, cfg: dict[str, Any]
) -> dict[str, Any]:
    """Method A on pairs that differ in every factor: keeps C's content, takes S's style."""
    from contract.methods.inject import InjectParams
    from worker.engine.methods.inject import content_trajectory, inject_content

    content, style, c_lab, s_lab = differing_pairs(gen, pairs, seed=7)
    steps, refine = int(cfg.get("steps", 50)), int(cfg.get("refine", 1))
    settings = InjectParams(**{k: v for k, v in cfg.items() if k not in ("steps", "refine")})
    grid = timestep_grid(steps, dn.num_train_timesteps, "linspace")
    with torch.no_grad():
        traj = content_trajectory(dn, content, grid, refine=refine)
        x_T = ddim_invert(dn, style, grid, fixed_point_iters=refine).x_T
        gens = [torch.Generator().manual_seed(i) for i in range(pairs)]
        out = inject_content(dn, x_T, traj, settings, generator=gens)
    pred = clf.predict(out.clamp(-1, 1))
    cols = list(gen.FACTORS)
    row: dict[str, Any] = {"config": {"steps": steps, "refine": refine, **cfg}}
    keeps = np.ones(pairs, bool)
    takes = np.ones(pairs, bool)
    for f in cols:
        got = pred[f][0].numpy()
        if f in gen.CONTENT_FACTORS:
            hit = got == c_lab[:, cols.index(f)]
            keeps &= hit
            row[f"keeps_{f}"] = round(float(hit.mean()), 3)
        else:
            hit = got == s_lab[:, cols.index(f)]
            takes &= hit
            row[f"takes_{f}"] = round(float(hit.mean()), 3)
    row["keeps_all_content"] = round(float(keeps.mean()), 3)
    row["takes_all_style"] = round(float(takes.mean()), 3)
    row["both"] = round(float((keeps & takes).mean()), 3)
    row["valid"] = valid_share(clf, out)
    print("inject:", json.dumps(row), flush=True)
    return row


def sample_quality(dn: Denoiser, clf: AttributeClassifier, count: int, steps: int) -> float:
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        out = ddim_sample(
            dn, dn.noise((count, *dn.sample_shape), gen), timestep_grid(steps, 1000), eta=1.0,
            generator=gen,
        )  # fmt: skip
    pred = clf.predict(out.clamp(-1, 1))
    confident = torch.stack([p > 0.9 for _, p in pred.values()]).all(0)
    return round(float(confident.float().mean()), 3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", required=True)
    p.add_argument("--classifier", required=True)
    p.add_argument("--domain", default="aligned")
    p.add_argument("--pairs", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--refine", type=int, default=1)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--inject", help="method A: a JSON list of InjectParams configs to run")
    p.add_argument("--skip-swap", action="store_true", help="only the --inject rows")
    p.add_argument("--json", dest="json_out")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = domain(args.domain)
    dn = load_denoiser(args.model, device="cpu", dtype="float32")
    clf = AttributeClassifier.load(args.classifier)
    if args.inject:
        inject_rows = [inject_row(dn, clf, gen, args.pairs, c) for c in json.loads(args.inject)]
        if args.skip_swap:
            write_json(args.json_out, {"model": args.model, "inject": inject_rows})
            return 0
    rows = [
        swap_row(dn, clf, gen, f, args.pairs, args.steps, args.refine, seed=100 + i)
        for i, f in enumerate(gen.FACTORS)
    ]
    results = {
        "model": args.model,
        "pairs": args.pairs,
        "steps": args.steps,
        "refine": args.refine,
        "rows": rows,
        "samples_confident": sample_quality(dn, clf, args.samples, 50),
    }
    print(f"{'factor':<12}{'test':<22}{'share':>7}{'valid':>7}")
    for row in rows:
        valid = "-" if row["valid"] is None else f"{row['valid']:.2f}"
        print(f"{row['factor']:<12}{row['test']:<22}{row['share']:>7.3f}{valid:>7}")
    print("samples confident on every factor:", results["samples_confident"])
    print(json.dumps(results))
    write_json(args.json_out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
