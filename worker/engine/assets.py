"""The file format of fitted assets: safetensors bytes, tensors plus string metadata.

Each fit method's asset is a typed dataclass next to its engine code (``DirectionsAsset``,
``BoundaryAsset``, ``LamAsset``, ``StyleNoiseAsset``) with ``to_safetensors`` and
``from_safetensors``; they all pack and unpack through the two functions here.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from worker.engine.errors import InputError


def pack(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> bytes:
    """safetensors bytes of fp32 CPU copies of ``tensors``, with ``meta`` in the header."""
    from safetensors.torch import save

    packed = {k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}
    data: bytes = save(packed, metadata=meta)
    return data


def unpack(data: bytes, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of safetensors bytes; InputError when they are not one."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    meta = metadata(data, kind)
    try:
        tensors = load(data)
    except (ValueError, SafetensorError) as exc:
        raise InputError(f"asset: not a {kind} asset ({exc})") from exc
    return tensors, meta


def metadata(data: bytes, kind: str) -> dict[str, str]:
    """The metadata of safetensors bytes, without loading the tensors.

    safetensors' loader for bytes returns the tensors only; the metadata is read from
    the format's header (8 bytes little-endian length, then JSON with ``__metadata__``).
    """
    try:
        size = int.from_bytes(data[:8], "little")
        header: dict[str, Any] = json.loads(data[8 : 8 + size])
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"asset: not a {kind} asset ({exc})") from exc
    meta = header.get("__metadata__") or {} if isinstance(header, dict) else None
    if not isinstance(meta, dict):
        raise InputError(f"asset: not a {kind} asset (no metadata map)")
    return {str(k): str(v) for k, v in meta.items()}


def grid_of(meta: dict[str, str]) -> list[int]:
    return [int(t) for t in json.loads(meta["grid"])]
