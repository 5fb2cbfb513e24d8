"""The ``editserve`` command line.

This module stays torch-free: commands that need the engine import it lazily,
so the API image (no torch) can still run the HTTP and client commands.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


def _reconstruct(args: argparse.Namespace) -> int:
    from worker.commands import reconstruct_command

    return reconstruct_command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="editserve",
        description="Training-free image edits on frozen diffusion U-Nets.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    rec = sub.add_parser(
        "reconstruct",
        help="invert an image and regenerate it; print the reconstruction PSNR",
        description="Invert one image with DDIM or edit-friendly DDPM inversion, sample it "
        "back, write the result and print the PSNR against the input.",
    )
    rec.add_argument("--model", required=True, help="a diffusers model folder or a hub id")
    rec.add_argument("--image", required=True, help="input image (PNG, JPEG, ...)")
    rec.add_argument("--out", required=True, help="where to write the reconstruction (PNG)")
    rec.add_argument("--steps", type=int, default=50, help="inversion and sampling steps (50)")
    rec.add_argument("--inversion", choices=("ddim", "ddpm"), default="ddim")
    rec.add_argument("--grid", choices=("leading", "linspace"), default="leading")
    rec.add_argument(
        "--fit",
        choices=("error", "resize", "crop"),
        default="error",
        help="how an image of another size is fitted to the model (default: refuse)",
    )
    rec.add_argument("--prompt", default="", help="prompt for text-conditioned models")
    rec.add_argument("--seed", type=int, default=0, help="seed of the edit-friendly inversion")
    rec.add_argument("--device", default="auto")
    rec.add_argument(
        "--dtype", default="auto", help="auto (fp16 on CUDA, fp32 on CPU), float32, bfloat16"
    )
    rec.set_defaults(handler=_reconstruct)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
