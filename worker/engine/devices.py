"""Device and dtype policy: fp16 on CUDA by default, fp32 (or bf16 on request) on the CPU.

Model weights and U-Net activations run in the policy dtype; everything the
scheduler computes (alpha_bar arithmetic, DDIM updates, inversion noise) is fp32,
so the denoiser adapter casts its outputs back to fp32 before they leave it.
"""

from __future__ import annotations

from typing import Literal

import torch

from worker.engine.errors import InputError

DTypeName = Literal["auto", "float32", "float16", "bfloat16"]

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; anything else is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise InputError(
            f"device: unknown device {name!r}; expected auto, cpu or cuda[:N]"
        ) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device: {name!r} asked for, but CUDA is not available on this machine")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: fp16 on CUDA, fp32 on the CPU. fp16 on the CPU is refused (slow, lossy)."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in _DTYPES:
        allowed = ", ".join(["auto", *sorted(_DTYPES)])
        raise InputError(f"dtype: unknown dtype {name!r}; expected one of {allowed}")
    dtype = _DTYPES[name]
    if dtype == torch.float16 and device.type == "cpu":
        raise InputError("dtype: float16 is not supported on the CPU; use float32 or bfloat16")
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
