"""Inversions cached so re-editing an image skips its inversion.

Keyed by everything the inversion depends on: model, image content id, kind,
steps, grid, prompt and (edit-friendly inversion only) the seed. Two layers: an
in-process LRU bounded by bytes, and safetensors files in a folder beside the
blob store that every worker shares, so a re-edit hits whichever worker takes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from worker.engine.reconstruct import Inversion

log = logging.getLogger("editserve.worker.cache")


@dataclass(frozen=True)
class InversionKey:
    model: str
    image: str
    kind: str
    steps: int
    grid: str
    prompt: str = ""
    seed: int | None = None  # only the edit-friendly inversion draws noise

    def digest(self) -> str:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def _save(inv: Inversion, path: Path) -> None:
    # clones: rows sliced from one batch tensor share storage, which safetensors refuses
    packed = torch.contiguous_format
    tensors = {"x_T": inv.x_T.clone(memory_format=packed)}
    for k, z in enumerate(inv.zs or []):
        tensors[f"z{k}"] = z.clone(memory_format=packed)
    meta = {"kind": inv.kind, "grid": json.dumps(inv.grid), "eta": str(inv.eta)}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _load(path: Path) -> Inversion:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    tensors = load_file(str(path))
    zs = [tensors[f"z{k}"] for k in range(len(tensors) - 1)] or None
    grid, eta = json.loads(meta["grid"]), float(meta["eta"])
    if meta["kind"] == "ddpm":
        return Inversion("ddpm", grid, tensors["x_T"], zs, eta)
    return Inversion("ddim", grid, tensors["x_T"], zs, eta)


def _touch(path: Path | None) -> None:
    """A read keeps the file: retention deletes files not read for a while."""
    if path is not None:
        with contextlib.suppress(OSError):
            os.utime(path)


class InversionCache:
    def __init__(self, max_bytes: int = 512 * 1024 * 1024, folder: Path | None = None) -> None:
        self.max_bytes = max_bytes
        self.folder = folder
        self._items: OrderedDict[InversionKey, Inversion] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: InversionKey) -> Inversion | None:
        path = self._path(key)
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
                self.hits += 1
        if item is not None:
            _touch(path)
            return item
        if path is not None and path.is_file():
            try:
                item = _load(path)
            except Exception:  # a torn or foreign file is a miss, not an error
                log.warning("unreadable inversion cache file %s", path, exc_info=True)
                item = None
            if item is not None:
                self._remember(key, item)
                self.hits += 1
                _touch(path)
                return item
        self.misses += 1
        return None

    def _path(self, key: InversionKey) -> Path | None:
        if self.folder is None:
            return None
        digest = key.digest()
        return self.folder / digest[:2] / f"{digest}.safetensors"

    def put(self, key: InversionKey, inversion: Inversion) -> None:
        size = inversion.nbytes
        if size > self.max_bytes:
            return
        stored = Inversion(
            inversion.kind,
            inversion.grid,
            inversion.x_T.detach().float().cpu(),
            None if inversion.zs is None else [z.detach().float().cpu() for z in inversion.zs],
            inversion.eta,
        )
        self._remember(key, stored)
        path = self._path(key)
        if path is not None:
            try:
                _save(stored, path)
            except (OSError, ValueError, RuntimeError):  # a cache must never fail the job
                log.exception("could not write the inversion cache file %s", path)

    def _remember(self, key: InversionKey, stored: Inversion) -> None:
        size = stored.nbytes
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[key] = stored
            self._bytes += size
            while self._bytes > self.max_bytes and self._items:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= evicted.nbytes

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes
