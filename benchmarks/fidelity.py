"""Two small measurements behind the fidelity fixes (a note's tables come from here).

1. ``replace_steps``: method A's injections and quality-boost noise against the number
   of generation steps, with the injections at every step (the old rule) or at a fixed
   number of replace steps (the reference's 50), from the schedule alone.
2. ``pca_signs``: PCA directions of h over generated samples, signs aligned to the top
   step (the reference's rule) or chained to the previous step: how many steps of each
   component end up opposed to the top step's direction.

    python -m benchmarks.fidelity
    python -m benchmarks.fidelity --only pca_signs --samples 128
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from benchmarks import write_json
from worker.engine import NoiseSchedule, load_denoiser, timestep_grid
from worker.engine.hspace import align_signs, pca_directions
from worker.engine.methods.directions import collect_h
from worker.engine.methods.inject import replace_step_indices
from worker.engine.sampling import ddim_sigma, reverse_steps


def replace_steps_table(t_edit: int = 400, t_boost: int = 200) -> list[dict[str, Any]]:
    """Injections (replace steps with t >= t_edit), boosted steps (0 < t <= t_boost) and
    the boost's total noise variance (sum of sigma^2, eta 1), per (steps, replace steps)."""
    sched = NoiseSchedule.from_scheduler_config({})

    def count(steps: int, replace: int) -> tuple[int, int, float]:
        grid = timestep_grid(steps, 1000, "linspace")
        chosen = replace_step_indices(len(grid), replace)
        injections = boosts = 0
        variance = 0.0
        for k, step in enumerate(reverse_steps(grid, sched)):
            if k in chosen and step.t >= t_edit:
                injections += 1
            if k in chosen and 0 < step.t <= t_boost:
                boosts += 1
                variance += ddim_sigma(step.ab_t, step.ab_s, 1.0) ** 2
        return injections, boosts, variance

    reference = count(1000, 50)[2]
    rows = []
    for steps, replace in [(1000, 50), (1000, 1000), (200, 50), (200, 200), (50, 50)]:
        injections, boosts, variance = count(steps, replace)
        rows.append({"steps": steps, "replace_steps": replace, "injections": injections,
                     "boosted_steps": boosts,
                     "boost_variance_vs_reference": round(variance / reference, 2)})  # fmt: skip
    return rows


def pca_signs(model: str, samples: int, steps: int, k: int = 5) -> dict[str, list[int]]:
    """Per alignment rule, per component: the steps opposed to the top step's direction."""
    dn = load_denoiser(model, device="cpu", dtype="float32")
    grid = timestep_grid(steps, dn.num_train_timesteps)
    gen = torch.Generator().manual_seed(0)
    x_T = dn.noise((samples, *dn.sample_shape), gen)
    h, _ = collect_h(dn, x_T, grid, eta=1.0, generator=gen)
    top_down = sorted(h, reverse=True)
    raw = [pca_directions(h[t], k)[0] for t in top_down]
    out: dict[str, list[int]] = {}
    for rule in ("first", "previous"):
        aligned = align_signs(raw, to=rule)
        top = aligned[0].reshape(k, -1)
        out[rule] = [
            sum(int(float(d.reshape(k, -1)[c] @ top[c]) < 0) for d in aligned) for c in range(k)
        ]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--only", nargs="+", choices=["replace_steps", "pca_signs"],
                   default=["replace_steps", "pca_signs"])  # fmt: skip
    p.add_argument("--model", default="models/shapes32-ddpm")
    p.add_argument("--samples", type=int, default=128)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", dest="json_out")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {}
    if "replace_steps" in args.only:
        results["replace_steps"] = replace_steps_table()
        for row in results["replace_steps"]:
            print("replace steps:", json.dumps(row))
    if "pca_signs" in args.only:
        results["pca_signs"] = pca_signs(args.model, args.samples, args.steps)
        for rule, opposed in results["pca_signs"].items():
            print(f"PCA signs aligned to the {rule} step: steps of {args.steps} opposed to the "
                  f"top step, per component: {opposed}")  # fmt: skip
    write_json(args.json_out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
