"""Engine benchmark: U-Net call cost per image, adapter/hook overhead, asymmetric step cost.

Random weights built from the architectures' configs (no download), so the numbers
measure the architecture, not a checkpoint:

- ``shapes32``: the shipped 32 px model's architecture (``worker.training.train_ddpm``),
- ``cifar10-32``: google/ddpm-cifar10-32 (35.7M parameters),
- ``celebahq-256``: google/ddpm-celebahq-256 (113.7M parameters).

Everything is printed side by side from one run; ratios are what to compare
across machines. Medians over ``--repeats`` timed calls after a warm-up; the
overhead rows interleave the bare and the adapter calls so drift hits both.

    python -m benchmarks.engine_bench                 # all three, batches 1/4/8
    python -m benchmarks.engine_bench --models shapes32 --repeats 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from typing import Any

import diffusers
import torch
from diffusers import UNet2DModel

from benchmarks import timed, write_json
from worker.engine import Denoiser, NoiseSchedule, asymmetric_step, ddim_step
from worker.training.train_ddpm import build_unet

_DDPM_COMMON: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": None,
    "center_input_sample": False,
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "in_channels": 3,
    "out_channels": 3,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-6,
    "norm_num_groups": 32,
    "time_embedding_type": "positional",
}
ARCHITECTURES: dict[str, Callable[[], UNet2DModel]] = {
    "shapes32": build_unet,
    "cifar10-32": lambda: UNet2DModel(
        **_DDPM_COMMON,
        sample_size=32,
        block_out_channels=(128, 256, 256, 256),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    ),
    "celebahq-256": lambda: UNet2DModel(
        **_DDPM_COMMON,
        sample_size=256,
        block_out_channels=(128, 128, 256, 256, 512, 512),
        down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,
    ),
}


def _median_ms(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    fn()  # warm-up
    return 1e3 * statistics.median(timed(fn, sync) for _ in range(repeats))


def bench_model(
    name: str, device: torch.device, dtypes: list[torch.dtype], batches: list[int], repeats: int
) -> dict[str, Any]:
    torch.manual_seed(0)
    base = ARCHITECTURES[name]().eval().requires_grad_(False)
    schedule = NoiseSchedule.from_scheduler_config({})
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    result: dict[str, Any] = {
        "model": name,
        "params_m": round(sum(p.numel() for p in base.parameters()) / 1e6, 1),
        "per_image_ms": {},
    }
    # Bigger models get fewer timed calls at big batches: the medians stay stable.
    for dtype in dtypes:
        unet = base.to(device=device, dtype=dtype)
        den = Denoiser(name=name, unet=unet, schedule=schedule)
        row = {}
        for batch in batches:
            x = torch.randn(batch, *den.sample_shape, device=device)
            reps = max(2, repeats // batch) if name == "celebahq-256" else repeats

            def call(x: torch.Tensor = x, d: Denoiser = den) -> torch.Tensor:
                return d.eps(x, 500)

            with torch.no_grad():
                row[batch] = _median_ms(call, reps, sync) / batch
        result["per_image_ms"][str(dtype).removeprefix("torch.")] = row
    # Overhead and asymmetric cost: fp32 on CPU / the policy dtype on CUDA, batch 4.
    dtype = dtypes[0]
    unet = base.to(device=device, dtype=dtype)
    den = Denoiser(name=name, unet=unet, schedule=schedule)
    batch = 4
    x = torch.randn(batch, *den.sample_shape, device=device)
    t_in = torch.full((batch,), 500, device=device, dtype=torch.long)
    x_in = x.to(dtype)
    reps = max(4, repeats // 4) if name == "celebahq-256" else repeats * 2
    bare_t, adapter_t, hooked_t = [], [], []
    with torch.no_grad():
        calls: dict[str, Callable[[], torch.Tensor]] = {
            "bare": lambda: unet(x_in, t_in, return_dict=False)[0].float(),
            "adapter": lambda: den.eps(x, 500),
        }
        for fn in calls.values():
            fn()
        with den.hooks.edit_h("noop", lambda h, t: None):
            den.eps(x, 500)
        for _ in range(reps):
            bare_t.append(timed(calls["bare"], sync))
            adapter_t.append(timed(calls["adapter"], sync))
            with den.hooks.edit_h("noop", lambda h, t: None):
                hooked_t.append(timed(calls["adapter"], sync))
        ab_t, ab_s = schedule.ab(500), schedule.ab(480)

        def plain() -> None:
            ddim_step(x, den.eps(x, 500), ab_t, ab_s)

        def asym() -> None:
            asymmetric_step(den, x, 500, 480, lambda h, t: h * 1.1)

        plain_ms = _median_ms(plain, reps, sync)
        asym_ms = _median_ms(asym, reps, sync)
    bare_ms = 1e3 * statistics.median(bare_t)
    result["overhead"] = {
        "batch": batch,
        "dtype": str(dtype).removeprefix("torch."),
        "bare_ms": round(bare_ms, 2),
        "adapter_ms": round(1e3 * statistics.median(adapter_t), 2),
        "adapter_noop_hook_ms": round(1e3 * statistics.median(hooked_t), 2),
        "plain_step_ms": round(plain_ms, 2),
        "asymmetric_step_ms": round(asym_ms, 2),
    }
    return result


_SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def print_table(results: list[dict[str, Any]], batches: list[int]) -> None:
    dtypes = list(results[0]["per_image_ms"])
    head = f"{'model':<14}{'params':>8}  " + "  ".join(
        f"{_SHORT[d]} b{b}".rjust(11) for d in dtypes for b in batches
    )
    print("\nms per image per U-Net call (median)")
    print(head)
    for r in results:
        cells = "  ".join(f"{r['per_image_ms'][d][b]:>11.2f}" for d in dtypes for b in batches)
        print(f"{r['model']:<14}{r['params_m']:>7.1f}M  {cells}")
    if len(dtypes) == 2:
        print(f"\n{dtypes[1]} / {dtypes[0]} time ratio per image")
        for r in results:
            ratios = "  ".join(
                f"b{b}: {r['per_image_ms'][dtypes[1]][b] / r['per_image_ms'][dtypes[0]][b]:.2f}x"
                for b in batches
            )
            print(f"{r['model']:<14}{ratios}")
    print(
        "\nengine overhead at batch 4 (median ms; target adapter <= 1.05x bare, asym <= 1.6x plain)"
    )
    print(
        f"{'model':<14}{'bare':>9}{'adapter':>9}{'ratio':>7}{'+noop h':>9}{'ratio':>7}"
        f"{'plain':>9}{'asym':>9}{'ratio':>7}"
    )
    for r in results:
        o = r["overhead"]
        print(
            f"{r['model']:<14}{o['bare_ms']:>9.2f}{o['adapter_ms']:>9.2f}"
            f"{o['adapter_ms'] / o['bare_ms']:>6.3f}x{o['adapter_noop_hook_ms']:>9.2f}"
            f"{o['adapter_noop_hook_ms'] / o['bare_ms']:>6.3f}x"
            f"{o['plain_step_ms']:>9.2f}{o['asymmetric_step_ms']:>9.2f}"
            f"{o['asymmetric_step_ms'] / o['plain_step_ms']:>6.2f}x"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", nargs="+", choices=list(ARCHITECTURES), default=list(ARCHITECTURES))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 4, 8])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", dest="json_out", help="also write the results as JSON here")
    args = p.parse_args(argv)
    diffusers.utils.logging.set_verbosity_error()
    device = torch.device(args.device)
    low = torch.float16 if device.type == "cuda" else torch.bfloat16
    dtypes = [torch.float32, low]
    print(
        f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
        f"repeats={args.repeats}",
        file=sys.stderr,
    )
    results = []
    for name in args.models:
        print(f"... {name}", file=sys.stderr)
        results.append(bench_model(name, device, dtypes, args.batches, args.repeats))
    print_table(results, args.batches)
    write_json(args.json_out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
