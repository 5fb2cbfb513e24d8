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


def full_fp32_on_cuda(device: torch.device, dtype: torch.dtype) -> bool:
    """Make float32 on CUDA full float32: turn TF32 off for cuDNN convolutions and matmuls.

    PyTorch runs cuDNN convolutions in TF32 by default (10-bit mantissa), which left the
    exact (edit-friendly) round trip at 7e-4 on an H100 against 8e-7 on the CPU. A model
    loaded in float32 on CUDA asks for precision (the speed default there is float16), so
    this process gets it; the setting is process-wide and leaves fp16/bf16 untouched.
    Returns whether it changed anything.
    """
    if device.type != "cuda" or dtype != torch.float32:
        return False
    changed = torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return bool(changed)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
